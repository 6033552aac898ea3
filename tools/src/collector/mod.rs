//! `telemetry-collector`: consumes telemetry records from the broker in a consumer group,
//! stores them per GPU as JSONL with a memory cache in front, and serves them over HTTP.
//!
//! ```text
//! broker ─DELIVER─▶ ingest (consumer thread + parse workers) ─▶ store (writer thread)
//!                         ▲ ACK after sync                          │ JSONL, checkpoint
//!                         └────────────── verdicts ◀────────────────┤
//!                                                                   ▼
//!                               HTTP API (axum) ◀── catalog + time index, cache
//! ```
//!
//! Module map: [`record`] validates and normalises records, [`line`] is the stored sample
//! and its JSONL line, [`store`] writes files and the [`checkpoint`] and recovers them,
//! [`retention`] deletes old hours of files, [`catalog`] knows every GPU and indexes its
//! files by time, [`cache`] holds the latest samples, [`query`] answers telemetry queries,
//! [`ingest`] runs the broker side, [`series`] reduces a window to buckets for charts,
//! [`http`] the API and [`metrics`] its Prometheus page. `spec/collector.md` specifies the
//! files and the API's behaviour; `spec/openapi.json` is generated from [`http`].

pub mod cache;
pub mod catalog;
pub mod checkpoint;
pub mod http;
pub mod ingest;
pub mod line;
pub mod metrics;
pub mod page;
pub mod query;
pub mod record;
pub mod retention;
pub mod series;
pub mod stats;
pub mod store;
pub mod timestamp;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::Duration;

use log::{info, warn};
use mq_client::{BackoffConfig, Client, ClientConfig};

use self::cache::Cache;
use self::catalog::Catalog;
use self::ingest::IngestConfig;
use self::retention::RetentionState;
use self::stats::Stats;
use self::store::{Store, StoreConfig};
use crate::api::BrokerView;

/// State shared by ingest, storage and the HTTP handlers.
#[derive(Debug)]
pub struct Shared {
    /// Every GPU, with its time index.
    pub catalog: RwLock<Catalog>,
    /// The latest samples.
    pub cache: Mutex<Cache>,
    /// Counters and health.
    pub stats: Stats,
    /// `<data_dir>/gpus`.
    pub gpus_dir: PathBuf,
    /// The broker's `STATS` as the monitor last read it (for `/api/v1/pipeline`).
    pub broker: Mutex<BrokerView>,
    /// Retention: what queries may return, and the clock.
    pub retention: RetentionState,
}

impl Shared {
    /// Empty state for a data directory.
    pub fn new(
        data_dir: &std::path::Path,
        cache_samples_per_gpu: usize,
        cache_samples_max: usize,
    ) -> Shared {
        Shared {
            catalog: RwLock::new(Catalog::default()),
            cache: Mutex::new(Cache::new(cache_samples_per_gpu, cache_samples_max)),
            stats: Stats::new(),
            gpus_dir: data_dir.join("gpus"),
            broker: Mutex::new(BrokerView {
                addrs: Vec::new(),
                fetched_at: None,
                stats: None,
                info: None,
                error: None,
            }),
            retention: RetentionState::default(),
        }
    }

    /// The earliest sample time queries return now (retention; `i64::MIN` without).
    pub fn visible_from_ms(&self) -> i64 {
        self.retention.visible_from_ms(self.retention.now_ms())
    }
}

/// Settings of a collector.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// Broker side.
    pub ingest: IngestConfig,
    /// Files.
    pub store: StoreConfig,
    /// HTTP listen address.
    pub http: SocketAddr,
    /// Bearer token the HTTP API requires (all but `/health`), if any.
    pub http_token: Option<String>,
    /// Samples per GPU in the cache.
    pub cache_samples_per_gpu: usize,
    /// Samples in the cache in total.
    pub cache_samples_max: usize,
}

/// Runs a collector until SIGINT or SIGTERM, then stops consuming, finishes and
/// acknowledges the batches in flight, and returns.
///
/// # Errors
/// The data directory cannot be opened or recovered, the HTTP address cannot be bound, or
/// the broker refused the auth token (then the collector stops at once).
pub fn run(config: CollectorConfig) -> io::Result<()> {
    let shared = Arc::new(Shared::new(
        &config.store.data_dir,
        config.cache_samples_per_gpu,
        config.cache_samples_max,
    ));
    shared.broker.lock().expect("broker lock").addrs = config.ingest.addrs.clone();
    let store = Store::open(config.store.clone(), Arc::clone(&shared))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("http")
        .enable_all()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind(config.http))?;
    let stop = Arc::new(AtomicBool::new(false));
    let ingest = {
        let (shared, stop, ingest) =
            (Arc::clone(&shared), Arc::clone(&stop), config.ingest.clone());
        thread::Builder::new()
            .name("consumer".into())
            .spawn(move || ingest::run(ingest, store, shared, stop))?
    };
    let monitor = {
        let (shared, stop, ingest) =
            (Arc::clone(&shared), Arc::clone(&stop), config.ingest.clone());
        thread::Builder::new()
            .name("monitor".into())
            .spawn(move || monitor(&ingest, &shared, &stop))?
    };
    let state = http::AppState::new(
        Arc::clone(&shared),
        config.http_token.clone(),
        config.ingest.group.clone(),
    );
    let served = runtime.block_on(http::serve(listener, state, Arc::clone(&stop)));
    stop.store(true, Relaxed);
    info!("stopping: finishing the batches in flight");
    let consumed = ingest.join().unwrap_or_else(|_| {
        warn!("the consumer thread panicked");
        Ok(())
    });
    let _ = monitor.join();
    runtime.shutdown_timeout(Duration::from_secs(1));
    info!("stopped");
    served?;
    consumed.map_err(|e| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "auth refused: the broker refused the auth token ({e}); retrying cannot help: \
             check --auth-token or MQ_AUTH_TOKEN"
            ),
        )
    })
}

/// Asks the broker every second for its `STATS`: its health, the group's lag, and the
/// document `/api/v1/pipeline` serves.
fn monitor(config: &IngestConfig, shared: &Shared, stop: &AtomicBool) {
    let client_config = ClientConfig {
        request_timeout: Duration::from_secs(2),
        backoff: BackoffConfig::never(),
        ..config.client.clone()
    };
    let mut client: Option<Client> = None;
    while !stop.load(Relaxed) {
        let mut error = None;
        if client.is_none() {
            match Client::connect(&config.addrs, client_config.clone()) {
                Ok(mut c) => {
                    let info = c.broker_info().and_then(|i| serde_json::to_value(i).ok());
                    shared.broker.lock().expect("broker lock").info = info;
                    client = Some(c);
                }
                Err(e) => error = Some(e.to_string()),
            }
        }
        let stats = client.as_mut().map(Client::stats);
        match stats {
            Some(Ok(reply)) => {
                shared.stats.broker_up.store(true, Relaxed);
                let lag = reply
                    .groups
                    .iter()
                    .find(|g| g.group == config.group && g.topic == config.topic)
                    .map_or(0, |g| g.lag as i64);
                shared.stats.lag.store(lag, Relaxed);
                let mut view = shared.broker.lock().expect("broker lock");
                view.stats = serde_json::to_value(&reply).ok();
                view.fetched_at = Some(timestamp::format_ms_string(timestamp::now_ms()));
                view.error = None;
            }
            failed => {
                if let Some(Err(e)) = failed {
                    error = Some(e.to_string());
                }
                if shared.stats.broker_up.swap(false, Relaxed) {
                    warn!("broker unreachable at {}", config.addrs.join(","));
                }
                shared.broker.lock().expect("broker lock").error = error;
                client = None;
            }
        }
        let until = std::time::Instant::now() + Duration::from_secs(1);
        while !stop.load(Relaxed) && std::time::Instant::now() < until {
            thread::sleep(Duration::from_millis(20));
        }
    }
}
