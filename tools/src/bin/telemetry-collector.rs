//! `telemetry-collector`: consumes the telemetry topic in a consumer group, stores each
//! GPU's samples in `<data-dir>/gpus/<hour>/<uuid>.jsonl`, deletes hours past the
//! retention, and serves them over HTTP. See `mq_tools::collector` and
//! `spec/collector.md`.
//!
//! Every flag can also be set in a TOML file given with `--config`, under the flag's name
//! with `_` for `-`; flags on the command line win.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mq_client::ClientConfig;
use mq_tools::collector::retention::{RetentionConfig, HOURS_MAX};
use mq_tools::collector::{self, ingest::IngestConfig, store::StoreConfig, CollectorConfig};
use serde::Deserialize;

/// Consume GPU telemetry from the broker, store it per GPU, serve it over HTTP.
#[derive(Debug, Default, Parser, Deserialize)]
#[command(version, after_help = mq_tools::api::HELP_API)]
#[serde(deny_unknown_fields)]
struct Args {
    /// TOML file with defaults for these flags.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Broker addresses, `host:port`, comma-separated [default: 127.0.0.1:7420].
    #[arg(long, env = "MQ_ADDR")]
    addr: Option<String>,
    /// Token for the broker, if it requires one.
    #[arg(long, env = "MQ_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// Topic to consume [default: telemetry].
    #[arg(long)]
    topic: Option<String>,
    /// Consumer group; collectors in one group split the partitions, so the GPUs
    /// [default: collectors].
    #[arg(long)]
    group: Option<String>,
    /// HTTP listen address; port 0 picks a free port, logged as "http listening on"
    /// [default: 127.0.0.1:8080].
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Bearer token the HTTP API requires on every path but /health.
    #[arg(long, env = "COLLECTOR_HTTP_TOKEN", hide_env_values = true)]
    http_token: Option<String>,
    /// Data directory, created if missing: gpus/<hour>/<uuid>.jsonl and checkpoint.json
    /// [default: collector-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Delete samples older than this many hours (by their timestamp): they leave the API
    /// at once and the disk within the hour; 0 keeps them for ever [default: 168].
    #[arg(long)]
    retention_hours: Option<u64>,
    /// Keep the JSONL files under this many bytes by deleting the oldest hours (never the
    /// current one); 0 is no cap [default: 0].
    #[arg(long)]
    retention_bytes: Option<u64>,
    /// Samples per GPU kept in the memory cache [default: 10000].
    #[arg(long)]
    cache_samples_per_gpu: Option<usize>,
    /// Samples kept in the memory cache in total; least recently used GPUs are evicted
    /// whole [default: 1000000].
    #[arg(long)]
    cache_samples_max: Option<usize>,
    /// Most GPUs; records of further GPUs go to the dead-letter topic [default: 100000].
    #[arg(long)]
    gpus_max: Option<usize>,
    /// Most JSONL files kept open between batches [default: 256].
    #[arg(long)]
    open_files_max: Option<usize>,
    /// Most records in flight from the broker, unacknowledged [default: 8192].
    #[arg(long)]
    credit: Option<u32>,
    /// Most records per storage batch: one sync and one checkpoint each [default: 4096].
    #[arg(long)]
    batch_max: Option<usize>,
    /// Threads that parse and validate records [default: 2].
    #[arg(long)]
    workers: Option<usize>,
}

impl Args {
    fn or(self, file: Args) -> Args {
        macro_rules! pick {
            ($($f:ident),*) => { Args { config: self.config, $($f: self.$f.or(file.$f)),* } };
        }
        pick!(
            addr,
            auth_token,
            topic,
            group,
            http,
            http_token,
            data_dir,
            retention_hours,
            retention_bytes,
            cache_samples_per_gpu,
            cache_samples_max,
            gpus_max,
            open_files_max,
            credit,
            batch_max,
            workers
        )
    }

    fn resolve(self) -> Result<CollectorConfig, String> {
        let cache_samples_per_gpu = self.cache_samples_per_gpu.unwrap_or(10_000);
        let cache_samples_max = self.cache_samples_max.unwrap_or(1_000_000);
        if cache_samples_per_gpu == 0 || cache_samples_per_gpu > cache_samples_max {
            return Err("cache_samples_per_gpu must be from 1 to cache_samples_max".into());
        }
        let (credit, batch_max) = (self.credit.unwrap_or(8192), self.batch_max.unwrap_or(4096));
        let gpus_max = self.gpus_max.unwrap_or(100_000);
        if credit == 0 || batch_max == 0 || gpus_max == 0 {
            return Err("credit, batch_max and gpus_max must be positive".into());
        }
        let retention = RetentionConfig {
            hours: self.retention_hours.unwrap_or(168),
            bytes: self.retention_bytes.unwrap_or(0),
        };
        if retention.hours > HOURS_MAX {
            return Err(format!("retention_hours must be at most {HOURS_MAX} (0: for ever)"));
        }
        let addr = self.addr.unwrap_or_else(|| mq_tools::ADDR_DEFAULT.to_string());
        Ok(CollectorConfig {
            ingest: IngestConfig {
                addrs: mq_tools::split_addrs(&addr),
                topic: self.topic.unwrap_or_else(|| "telemetry".into()),
                group: self.group.unwrap_or_else(|| "collectors".into()),
                client: ClientConfig { auth_token: self.auth_token, ..ClientConfig::default() },
                credit,
                batch_max,
                workers: self.workers.unwrap_or(2).max(1),
            },
            store: StoreConfig {
                data_dir: self.data_dir.unwrap_or_else(|| PathBuf::from("collector-data")),
                open_files_max: self.open_files_max.unwrap_or(256).max(1),
                gpus_max,
                retention,
            },
            http: self.http.unwrap_or_else(|| "127.0.0.1:8080".parse().expect("valid")),
            http_token: self.http_token,
            cache_samples_per_gpu,
            cache_samples_max,
        })
    }
}

fn load(args: Args) -> Result<CollectorConfig, String> {
    let file: Args = mq_tools::read_config(args.config.as_deref())?;
    args.or(file).resolve()
}

fn main() -> ExitCode {
    mq_tools::service_main("telemetry-collector", || load(Args::parse()), collector::run)
}
