//! `mqd` settings: command-line flags and an optional TOML file with the same keys (flags
//! win), resolved into [`Config`] with the unit in every name.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::core::CoreConfig;
use crate::storage::Retention;

/// Flags of `mqd`. Every flag can also be set in the `--config` file under the same name with
/// `_` for `-` (for example `ack_timeout_ms = 5000`).
#[derive(Debug, Default, Parser, Deserialize)]
#[command(
    name = "mqd",
    version,
    about = "The mq message broker: topics, consumer groups, at-least-once delivery."
)]
#[serde(default, deny_unknown_fields)]
pub struct Args {
    /// TOML file with any of these settings; flags given on the command line win.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on. Loopback by default; anything else should set --auth-token.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<SocketAddr>,
    /// Where records live: `memory` (lost at exit) or `disk`.
    #[arg(long, value_name = "memory|disk")]
    pub storage: Option<String>,
    /// Data directory for `--storage disk`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Durability of `--storage disk`: `always`, `interval:<ms>` or `never`.
    #[arg(long, value_name = "MODE")]
    pub fsync: Option<String>,
    /// Default acknowledgement timeout before a record is redelivered [default: 5000].
    #[arg(long, value_name = "MS")]
    pub ack_timeout_ms: Option<u64>,
    /// Acknowledgement timeout of one group, as GROUP=MS (repeatable).
    #[arg(long = "group-ack-timeout", value_name = "GROUP=MS")]
    pub group_ack_timeout: Option<Vec<String>>,
    /// Deliveries of one record before it goes to `<topic>.dlq` [default: 5].
    #[arg(long, value_name = "N")]
    pub max_deliveries: Option<u32>,
    /// Largest frame body (and text payload) accepted [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    pub max_frame_bytes: Option<u32>,
    /// Longest text-dialect command line [default: 4096].
    #[arg(long, value_name = "BYTES")]
    pub max_line_bytes: Option<usize>,
    /// Most client connections at once [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Most topics [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_topics: Option<usize>,
    /// Most partitions of one topic [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_partitions: Option<u32>,
    /// Most (group, topic) pairs [default: 4096].
    #[arg(long, value_name = "N")]
    pub max_groups: Option<usize>,
    /// Partitions of an auto-created topic [default: 16].
    #[arg(long, value_name = "N")]
    pub partitions: Option<u32>,
    /// Most records in flight to one subscription, whatever credit it asks [default: 65536].
    #[arg(long, value_name = "N")]
    pub max_inflight: Option<u32>,
    /// Output buffered for one connection before its deliveries pause [default: 8388608].
    #[arg(long, value_name = "BYTES")]
    pub write_buffer_bytes: Option<usize>,
    /// A connection paused this long for a full output buffer is disconnected
    /// (SLOW_CONSUMER) [default: 10000].
    #[arg(long, value_name = "MS")]
    pub slow_consumer_ms: Option<u64>,
    /// Retention by size per partition; 0 = unlimited [default: 0 on disk, 4194304 in memory].
    #[arg(long, value_name = "BYTES")]
    pub retention_bytes: Option<u64>,
    /// Retention by age; 0 = unlimited [default: 0].
    #[arg(long, value_name = "MS")]
    pub retention_ms: Option<u64>,
    /// Shared secret clients must send with AUTH as their first request.
    #[arg(long, value_name = "TOKEN")]
    pub auth_token: Option<String>,
    /// Time a connection has to authenticate [default: 2000].
    #[arg(long, value_name = "MS")]
    pub auth_timeout_ms: Option<u64>,
    /// Close a connection that sent no request for this long (IDLE_TIMEOUT); 0: never
    /// [default: 0].
    #[arg(long, value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Size of segment files (disk storage) [default: 33554432].
    #[arg(long, value_name = "BYTES")]
    pub segment_bytes: Option<usize>,
    /// Most often the group checkpoint is written [default: 200].
    #[arg(long, value_name = "MS")]
    pub checkpoint_ms: Option<u64>,
    /// Delete a durable consumer group, with its committed offsets, once it has had no
    /// member for this long (like Kafka's offsets.retention.minutes); 0: never. Ephemeral
    /// groups go when their last member leaves [default: 604800000, 7 days].
    #[arg(long, value_name = "MS")]
    pub group_expiry_ms: Option<u64>,
}

impl Args {
    /// Fills every setting not given on the command line from `file`.
    pub fn or(self, file: Args) -> Args {
        macro_rules! pick {
            ($($f:ident),*) => { Args { config: self.config, $($f: self.$f.or(file.$f)),* } };
        }
        pick!(
            listen,
            storage,
            data_dir,
            fsync,
            ack_timeout_ms,
            group_ack_timeout,
            max_deliveries,
            max_frame_bytes,
            max_line_bytes,
            max_connections,
            max_topics,
            max_partitions,
            max_groups,
            partitions,
            max_inflight,
            write_buffer_bytes,
            slow_consumer_ms,
            retention_bytes,
            retention_ms,
            auth_token,
            auth_timeout_ms,
            idle_timeout_ms,
            segment_bytes,
            checkpoint_ms,
            group_expiry_ms
        )
    }

    /// Parses flags, reads `--config` if given, and resolves everything into a [`Config`].
    ///
    /// # Errors
    /// An unreadable or invalid config file, or an invalid value, as a message for the user.
    pub fn load(self) -> Result<Config, String> {
        let args = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
                let file: Args = toml::from_str(&text)
                    .map_err(|e| format!("config file {}: {e}", path.display()))?;
                self.or(file)
            }
            None => self,
        };
        args.resolve()
    }

    fn resolve(self) -> Result<Config, String> {
        let storage = match self.storage.as_deref().unwrap_or("disk") {
            "memory" => StorageKind::Memory,
            "disk" => StorageKind::Disk,
            other => return Err(format!("--storage must be memory or disk, not {other:?}")),
        };
        let mut group_ack_timeouts = HashMap::new();
        for spec in self.group_ack_timeout.unwrap_or_default() {
            let (group, ms) = spec
                .split_once('=')
                .ok_or_else(|| format!("--group-ack-timeout wants GROUP=MS, got {spec:?}"))?;
            let ms: u64 = ms
                .parse()
                .map_err(|_| format!("--group-ack-timeout {spec:?}: MS is not a number"))?;
            group_ack_timeouts.insert(group.to_string(), Duration::from_millis(ms.max(1)));
        }
        let frame_body_bytes_max =
            self.max_frame_bytes.unwrap_or(mq_protocol::limits::FRAME_BODY_BYTES_MAX_DEFAULT);
        if !(4096..=mq_protocol::limits::FRAME_BODY_BYTES_MAX_CEILING)
            .contains(&frame_body_bytes_max)
        {
            return Err(format!(
                "--max-frame-bytes must be 4096 to {}",
                mq_protocol::limits::FRAME_BODY_BYTES_MAX_CEILING
            ));
        }
        let line_bytes_max =
            self.max_line_bytes.unwrap_or(mq_protocol::limits::LINE_BYTES_MAX_DEFAULT);
        if !(512..=65536).contains(&line_bytes_max) {
            return Err("--max-line-bytes must be 512 to 65536".into());
        }
        let retention_bytes_default = match storage {
            StorageKind::Memory => MEMORY_RETENTION_BYTES_DEFAULT,
            StorageKind::Disk => 0,
        };
        let core = CoreConfig {
            partitions_default: self.partitions.unwrap_or(16).max(1),
            partitions_max: self.max_partitions.unwrap_or(1024).max(1),
            topics_max: self.max_topics.unwrap_or(1024),
            groups_max: self.max_groups.unwrap_or(4096),
            ack_timeout: Duration::from_millis(self.ack_timeout_ms.unwrap_or(5000).max(1)),
            group_ack_timeouts,
            max_deliveries: self.max_deliveries.unwrap_or(5).max(1),
            credit_max: self.max_inflight.unwrap_or(65_536).max(1),
            retention: Retention {
                bytes: self.retention_bytes.unwrap_or(retention_bytes_default),
                ms: self.retention_ms.unwrap_or(0),
            },
            frame_body_bytes_max,
            line_bytes_max,
            auth_token: self.auth_token,
            auth_timeout: Duration::from_millis(self.auth_timeout_ms.unwrap_or(2000)),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms.unwrap_or(0)),
            group_expiry: self
                .group_expiry_ms
                .map_or(crate::core::GROUP_EXPIRY_DEFAULT, Duration::from_millis),
            storage_name: match storage {
                StorageKind::Memory => "memory".into(),
                StorageKind::Disk => "disk".into(),
            },
            fsync_name: String::new(),
        };
        let fsync = match storage {
            StorageKind::Memory => FsyncMode::Never,
            StorageKind::Disk => FsyncMode::parse(self.fsync.as_deref().unwrap_or("always"))?,
        };
        let mut core = core;
        core.fsync_name = match storage {
            StorageKind::Memory => "none".into(),
            StorageKind::Disk => fsync.to_string(),
        };
        let segment_bytes = self.segment_bytes.unwrap_or(32 * 1024 * 1024);
        let segment_bytes_min = 2 * frame_body_bytes_max as usize;
        if segment_bytes < segment_bytes_min || segment_bytes > u32::MAX as usize {
            return Err(format!(
                "--segment-bytes must be {segment_bytes_min} (twice --max-frame-bytes) to {}",
                u32::MAX
            ));
        }
        if core.partitions_default > core.partitions_max {
            return Err("--partitions is above --max-partitions".into());
        }
        Ok(Config {
            listen: self
                .listen
                .unwrap_or_else(|| "127.0.0.1:7420".parse().expect("literal address")),
            storage,
            data_dir: self.data_dir.unwrap_or_else(|| PathBuf::from("./mq-data")),
            connections_max: self.max_connections.unwrap_or(1024).max(1),
            line_bytes_max,
            write_buf_bytes_max: self.write_buffer_bytes.unwrap_or(8 * 1024 * 1024).max(64 * 1024),
            slow_consumer: Duration::from_millis(self.slow_consumer_ms.unwrap_or(10_000)),
            fsync,
            disk: crate::storage::disk::DiskOptions { segment_bytes, ..Default::default() },
            checkpoint_every: Duration::from_millis(self.checkpoint_ms.unwrap_or(200).max(1)),
            core,
        })
    }
}

/// Byte retention per partition in memory mode unless set: 4 MiB (about 16,000 records of
/// 200 bytes), so a 16-partition topic holds at most about 64 MiB of records and the broker
/// stays under 200 MiB resident while records stream through (measured: `BENCHMARKS.md`).
pub const MEMORY_RETENTION_BYTES_DEFAULT: u64 = 4 * 1024 * 1024;

/// Where records live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageKind {
    /// In memory only.
    Memory,
    /// Segment files in the data directory.
    Disk,
}

/// When appends are made durable (`--fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncMode {
    /// Every turn's appends are flushed before any reply of the turn is sent (group commit).
    Always,
    /// Replies go out at once; appends are flushed every interval.
    Interval(Duration),
    /// The OS writes pages back when it likes (flushed at graceful shutdown).
    Never,
}

impl FsyncMode {
    /// Parses `always`, `interval:<ms>` or `never`.
    ///
    /// # Errors
    /// A message naming the accepted forms.
    pub fn parse(text: &str) -> Result<FsyncMode, String> {
        match text {
            "always" => Ok(FsyncMode::Always),
            "never" => Ok(FsyncMode::Never),
            _ => text
                .strip_prefix("interval:")
                .and_then(|ms| ms.parse::<u64>().ok())
                .filter(|&ms| ms > 0)
                .map(|ms| FsyncMode::Interval(Duration::from_millis(ms)))
                .ok_or_else(|| {
                    format!("--fsync must be always, interval:<ms> or never, not {text:?}")
                }),
        }
    }
}

impl std::fmt::Display for FsyncMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsyncMode::Always => f.write_str("always"),
            FsyncMode::Interval(d) => write!(f, "interval:{}", d.as_millis()),
            FsyncMode::Never => f.write_str("never"),
        }
    }
}

/// Resolved settings of a broker.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// Storage kind.
    pub storage: StorageKind,
    /// Data directory (disk storage).
    pub data_dir: PathBuf,
    /// Most connections at once.
    pub connections_max: usize,
    /// Longest text line, bytes.
    pub line_bytes_max: usize,
    /// Output buffered per connection before deliveries pause, bytes.
    pub write_buf_bytes_max: usize,
    /// How long a connection may stay paused before it is cut off.
    pub slow_consumer: Duration,
    /// Durability of disk storage.
    pub fsync: FsyncMode,
    /// Disk storage settings.
    pub disk: crate::storage::disk::DiskOptions,
    /// Most often the group checkpoint is written.
    pub checkpoint_every: Duration,
    /// Settings of the core.
    pub core: CoreConfig,
}

impl Config {
    /// Defaults with the given listen address and in-memory storage (handy for tests).
    pub fn memory(listen: SocketAddr) -> Config {
        let args = Args { storage: Some("memory".into()), listen: Some(listen), ..Args::default() };
        args.resolve().expect("defaults are valid")
    }

    /// Defaults with the given listen address and disk storage in `data_dir`.
    pub fn disk(listen: SocketAddr, data_dir: &std::path::Path) -> Config {
        let args = Args {
            storage: Some("disk".into()),
            listen: Some(listen),
            data_dir: Some(data_dir.to_path_buf()),
            ..Args::default()
        };
        args.resolve().expect("defaults are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file() {
        let flags = Args::parse_from(["mqd", "--ack-timeout-ms", "100"]);
        let file: Args = toml::from_str("ack_timeout_ms = 900\nmax_deliveries = 3\n").unwrap();
        let config = flags.or(file).resolve().unwrap();
        assert_eq!(config.core.ack_timeout, Duration::from_millis(100));
        assert_eq!(config.core.max_deliveries, 3);
    }

    #[test]
    fn unknown_file_keys_and_bad_values_are_errors() {
        assert!(toml::from_str::<Args>("no_such_key = 1").is_err());
        assert!(Args::parse_from(["mqd", "--storage", "tape"]).resolve().is_err());
        assert!(Args::parse_from(["mqd", "--group-ack-timeout", "g"]).resolve().is_err());
        assert!(Args::parse_from(["mqd", "--max-frame-bytes", "10"]).resolve().is_err());
        assert!(Args::parse_from(["mqd", "--fsync", "sometimes"]).resolve().is_err());
        assert!(Args::parse_from(["mqd", "--fsync", "interval:0"]).resolve().is_err());
        assert!(Args::parse_from(["mqd", "--segment-bytes", "1000"]).resolve().is_err());
    }

    #[test]
    fn fsync_modes_parse_and_print_back() {
        for text in ["always", "never", "interval:100"] {
            assert_eq!(FsyncMode::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn group_ack_timeouts_parse() {
        let config =
            Args::parse_from(["mqd", "--group-ack-timeout", "fast=250"]).resolve().unwrap();
        assert_eq!(config.core.group_ack_timeouts["fast"], Duration::from_millis(250));
    }
}

#[cfg(test)]
mod example_config {
    use super::*;

    /// The example shipped in `deploy/config/mqd.toml` loads, and means what it says.
    #[test]
    fn group_expiry_defaults_to_7_days_and_0_is_never() {
        let config = Args::parse_from(["mqd"]).resolve().unwrap();
        assert_eq!(config.core.group_expiry, Duration::from_secs(7 * 24 * 3600));
        let config = Args::parse_from(["mqd", "--group-expiry-ms", "0"]).resolve().unwrap();
        assert!(config.core.group_expiry.is_zero());
        let file: Args = toml::from_str("group_expiry_ms = 60000\n").unwrap();
        let config = Args::parse_from(["mqd"]).or(file).resolve().unwrap();
        assert_eq!(config.core.group_expiry, Duration::from_secs(60));
    }

    #[test]
    fn the_deployment_example_config_loads() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/mqd.toml");
        let args = Args { config: Some(path), ..Args::default() };
        let config = args.load().unwrap();
        assert_eq!(config.storage, StorageKind::Disk);
        assert_eq!(config.fsync, FsyncMode::Always);
        assert_eq!(config.data_dir, std::path::PathBuf::from("/var/lib/mq/broker"));
        assert!(config.listen.ip().is_loopback());
        assert_eq!(config.core.group_expiry, Duration::from_millis(604_800_000));
    }
}
