//! `telemetry-streamer`: publishes GPU telemetry from a CSV file (or generated data) to the
//! broker, one JSON record per row keyed by GPU UUID (`spec/telemetry.md`).
//!
//! Exit codes: 0 when every row read was acknowledged or skipped for a reason (and not
//! every row failed); 1 when records were left unacknowledged, every row failed, the file
//! had no data rows, or reading broke off; 2 for a usage error, an unreadable input, or a
//! token the broker refuses (the run stops at once then, with `telemetry-streamer: auth
//! refused: ...` as the last line on stderr: retrying cannot help).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use mq_client::{BackoffConfig, ClientConfig, ProducerConfig};
use mq_tools::streamer::worker::WorkerConfig;
use mq_tools::streamer::{self, Input, Options, RunError, Shard};
use mq_tools::{split_addrs, ADDR_DEFAULT};

/// Publish GPU telemetry from a CSV file (DCGM export or nvidia-smi output) to the broker.
#[derive(Debug, Parser)]
#[command(
    name = "telemetry-streamer",
    version,
    args_override_self = true,
    after_help = "Exit codes: 0 ok, 1 records unacknowledged or every row failed, 2 usage or input error, or the broker refused the auth token."
)]
struct Cli {
    /// TOML file of flags (`shard = "0/2"`, `loop = true`, `rate = 500`); flags on the
    /// command line win.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Broker address; several, comma-separated, are tried in order.
    #[arg(long, env = "MQ_ADDR", default_value = ADDR_DEFAULT, value_name = "HOST:PORT")]
    addr: String,
    /// Topic to publish to.
    #[arg(long, default_value = "telemetry")]
    topic: String,
    /// The CSV file.
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "synthetic",
        conflicts_with = "synthetic"
    )]
    file: Option<PathBuf>,
    /// Read the input once (the default).
    #[arg(long, conflicts_with = "replay")]
    once: bool,
    /// Replay the input for ever (until stopped, --count or --duration).
    #[arg(long = "loop", id = "replay")]
    replay: bool,
    /// Print the records, one JSON object per line on stdout; publish nothing.
    #[arg(long)]
    dry_run: bool,
    /// Publishing threads, each with its own connection; a GPU's rows stay on one. Two
    /// connections let the broker take twice the bytes per group commit.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: u16,
    /// Records per second for the whole streamer, all workers together; 0 for as fast as
    /// the broker acknowledges.
    #[arg(long, default_value_t = 0.0, value_name = "R")]
    rate: f64,
    /// Publish only shard I of N: rows whose GPU id (the record key) has an FNV-1a hash
    /// (fnv1a_32, as the broker's partitioning) that is I modulo N, so each GPU's rows stay
    /// in one instance, in file order; every instance reads the whole file. A row without a
    /// valid GPU id (skipped anyway) goes by its row number modulo N (0-based, header
    /// excluded). With --synthetic, GPU number modulo N. See spec/telemetry.md, Sharding.
    #[arg(long, default_value = "0/1", value_name = "I/N")]
    shard: Shard,
    /// Generate DCGM-shaped data instead of reading a file.
    #[arg(long)]
    synthetic: bool,
    /// Synthetic hosts.
    #[arg(long, default_value_t = 4, value_name = "H")]
    hosts: u32,
    /// Synthetic GPUs per host.
    #[arg(long, default_value_t = 8, value_name = "G")]
    gpus_per_host: u32,
    /// Seed of the synthetic random walks.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop after this many rows.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Stop reading after this many seconds (then drain).
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// After SIGINT/SIGTERM, wait this long for outstanding acknowledgements. A second
    /// signal abandons them at once (counted as unacknowledged, summary printed, exit 1);
    /// a third exits at once without a summary.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    drain_timeout_ms: u64,
    /// Records per PUBLISH batch.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    batch_records: usize,
    /// Longest a batch waits for more records.
    #[arg(long, default_value_t = 5, value_name = "MS")]
    linger_ms: u64,
    /// Batches awaiting their reply at once, per worker.
    #[arg(long, default_value_t = 32, value_name = "N")]
    in_flight: usize,
    /// Rows longer than this are skipped (reason row_too_large).
    #[arg(long, default_value_t = 64 * 1024, value_name = "BYTES")]
    max_row_bytes: usize,
    /// Seconds between progress lines on stderr; 0 for none.
    #[arg(long, default_value_t = 2.0, value_name = "SECONDS")]
    progress: f64,
    /// Shared secret, if the broker requires one. A token the broker refuses stops the
    /// streamer at once (exit code 2): no retry can help.
    #[arg(long, env = "MQ_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = match mq_tools::args_with_config(std::env::args_os().collect()) {
        Ok(args) => Cli::parse_from(args),
        Err(e) => {
            eprintln!("telemetry-streamer: {e}");
            return ExitCode::from(2);
        }
    };
    let options = match options(&cli) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("telemetry-streamer: {e}");
            return ExitCode::from(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    if let Err(e) = handle_signals(&stop, &options.worker.abandon, options.worker.drain_timeout) {
        eprintln!("telemetry-streamer: cannot install signal handlers: {e}");
        return ExitCode::from(2);
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    match streamer::run(&options, stop, &mut out) {
        Ok(summary) => {
            eprint!("{}", summary.text());
            if let Some(refusal) = &summary.auth_refused {
                eprintln!("telemetry-streamer: {refusal}");
            }
            ExitCode::from(summary.exit_code())
        }
        Err(e @ RunError::HeaderOnly) => {
            eprintln!("telemetry-streamer: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("telemetry-streamer: {e}");
            ExitCode::from(2)
        }
    }
}

/// SIGINT or SIGTERM: the first sets `stop` (take no new rows, drain the outstanding
/// acknowledgements for up to the drain timeout); the second sets `abandon` (end the drain
/// now; the summary follows and counts what was left unacknowledged); the third exits at
/// once with code 1. Each says on stderr what it does, since a silent exit after a second
/// Ctrl-C left users unsure what had been published.
fn handle_signals(
    stop: &Arc<AtomicBool>,
    abandon: &Arc<AtomicBool>,
    drain: Duration,
) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    let (stop, abandon) = (stop.clone(), abandon.clone());
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        for (n, _) in signals.forever().enumerate() {
            match n {
                0 => {
                    eprintln!(
                        "telemetry-streamer: stopping: waiting up to {:.1} s for outstanding \
                         acknowledgements (signal again to abandon them)",
                        drain.as_secs_f64()
                    );
                    stop.store(true, Ordering::Relaxed);
                }
                1 => {
                    eprintln!(
                        "telemetry-streamer: second signal: abandoning outstanding \
                         acknowledgements; the summary follows (signal again to exit at once)"
                    );
                    abandon.store(true, Ordering::Relaxed);
                }
                _ => {
                    eprintln!("telemetry-streamer: third signal: exiting at once, no summary");
                    std::process::exit(1);
                }
            }
        }
    })?;
    Ok(())
}

fn options(cli: &Cli) -> Result<Options, String> {
    mq_client::protocol::names::validate_name("topic", &cli.topic).map_err(|e| e.to_string())?;
    let addrs = split_addrs(&cli.addr);
    if addrs.is_empty() {
        return Err("--addr names no broker".into());
    }
    if !(cli.rate >= 0.0 && cli.rate.is_finite()) {
        return Err(format!("--rate must be 0 or more, not {}", cli.rate));
    }
    let input = match &cli.file {
        Some(path) => Input::File(path.clone()),
        None => {
            Input::Synthetic { hosts: cli.hosts, gpus_per_host: cli.gpus_per_host, seed: cli.seed }
        }
    };
    let seconds = |s: f64, flag: &str| {
        Duration::try_from_secs_f64(s).map_err(|_| format!("{flag} must be 0 or more seconds"))
    };
    let duration = cli.duration.map(|d| seconds(d, "--duration")).transpose()?;
    let progress = seconds(cli.progress, "--progress")?;
    let client = ClientConfig {
        auth_token: cli.auth_token.clone(),
        // Give up reconnecting inside the client soon: the worker keeps trying with its
        // own backoff, and notices a stop between attempts.
        backoff: BackoffConfig {
            elapsed_max: Some(Duration::from_secs(2)),
            ..BackoffConfig::default()
        },
        ..ClientConfig::default()
    };
    let producer = ProducerConfig {
        batch_records: cli.batch_records.max(1),
        batch_bytes: ProducerConfig::default().batch_bytes.max(512 * 1024),
        linger: Duration::from_millis(cli.linger_ms),
        max_in_flight_batches: cli.in_flight.max(1),
    };
    let retry = BackoffConfig {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(5),
        attempts_max: None,
        elapsed_max: None,
    };
    Ok(Options {
        input,
        replay: cli.replay,
        shard: cli.shard,
        dry_run: cli.dry_run,
        workers: usize::from(cli.workers),
        count: cli.count,
        duration,
        row_bytes_max: cli.max_row_bytes,
        progress_every: (!progress.is_zero()).then_some(progress),
        rate_per_s: cli.rate,
        worker: WorkerConfig {
            addrs,
            topic: cli.topic.clone(),
            client,
            producer,
            drain_timeout: Duration::from_millis(cli.drain_timeout_ms),
            abandon: Arc::new(AtomicBool::new(false)),
            retry,
        },
    })
}
