//! `telemetry-stack`: the whole pipeline on one machine, in one command, for a first look.
//!
//! It runs the broker in this process (disk storage under `--data-dir`), starts a
//! `telemetry-collector` (the HTTP API and dashboard) and a `telemetry-streamer` (synthetic
//! DCGM data for `--hosts` × `--gpus-per-host` GPUs, or a CSV given with `--file`) as child
//! processes from the same build, prints the URLs and a few commands to try, shows progress
//! every few seconds, and on Ctrl-C (or SIGTERM) stops the streamer, then the collector, then
//! the broker, each gracefully, and exits 0 if all of them did.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use mq_broker::config::Config;
use mq_broker::event_loop::Running;
use mq_client::{Client, ClientConfig};

/// Run broker, streamer and collector locally on generated (or given) GPU telemetry.
#[derive(Debug, Parser)]
#[command(name = "telemetry-stack", version)]
struct Args {
    /// TOML file of these flags (`hosts = 8`, `file = "..."`); flags on the command line win.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1:7420")]
    broker: SocketAddr,
    /// HTTP address of the collector's API and dashboard.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Where the broker and the collector keep their data.
    #[arg(long, default_value = "mq-stack-data")]
    data_dir: PathBuf,
    /// Stream this CSV (DCGM export or nvidia-smi output, replayed in a loop) instead of
    /// synthetic data.
    #[arg(long, value_name = "CSV")]
    file: Option<PathBuf>,
    /// Synthetic hosts.
    #[arg(long, default_value_t = 4)]
    hosts: u32,
    /// Synthetic GPUs per host.
    #[arg(long, default_value_t = 8)]
    gpus_per_host: u32,
    /// Records per second the streamer publishes.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5)]
    progress: u64,
    /// Disk the stack may keep, in MiB: half for the broker's topics (split over their
    /// partitions, oldest segments dropped first), half for the collector's files (oldest
    /// hours first). The default lets it run all day on a laptop (without it the broker alone
    /// grew by about 4 GB an hour at the default rate); 0 keeps everything.
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    retention_mib: u64,
}

/// How long each component gets to stop gracefully before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);
/// How long the collector gets to start serving.
const START_WAIT: Duration = Duration::from_secs(30);

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = match mq_tools::args_with_config(std::env::args_os().collect()) {
        Ok(argv) => Args::parse_from(argv),
        Err(e) => {
            eprintln!("telemetry-stack: {e}");
            std::process::exit(2);
        }
    };
    match run(&args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("telemetry-stack: {e}");
            std::process::exit(1);
        }
    }
}

/// A sibling binary of this build (`target/<profile>/NAME`). `cargo run --bin
/// telemetry-stack` builds only this binary, so under cargo every binary of the workspace
/// (`mqd`, `mqctl`, `mq-bench` and the tools: the README uses them all) is built first, in
/// the same profile; up to date, that takes about a second.
fn sibling(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let path = exe.with_file_name(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: build it with `cargo build --release --workspace`",
            path.display()
        ))
    }
}

/// Under cargo, builds every binary of the workspace (same profile) so that the siblings
/// and the commands the banner suggests are all there and current.
fn build_siblings() -> Result<(), String> {
    let Ok(cargo) = std::env::var("CARGO") else { return Ok(()) };
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let release = exe.parent().and_then(Path::file_name).is_some_and(|d| d == "release");
    let mut build = Command::new(cargo);
    build.args(["build", "--workspace", "--bins"]);
    if release {
        build.arg("--release");
    }
    let status = build.status().map_err(|e| format!("cannot run cargo build: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build of the workspace failed ({status})"));
    }
    Ok(())
}

fn spawn(program: &Path, args: &[String], log: &Path) -> Result<Child, String> {
    let file =
        std::fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    use std::os::unix::process::CommandExt;
    Command::new(program)
        .args(args)
        // A process group of its own: Ctrl-C reaches only this program, which then stops the
        // children in order (streamer first, so everything it read reaches the collector).
        .process_group(0)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))
}

fn run(args: &Args) -> Result<bool, String> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).map_err(|e| e.to_string())?;
    }
    build_siblings()?;
    let streamer_bin = sibling("telemetry-streamer")?;
    let collector_bin = sibling("telemetry-collector")?;
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", args.data_dir.display()))?;

    let budget = Budget::of(args.retention_mib);
    let broker = Running::start(budget.broker_config(args.broker, &args.data_dir.join("broker")))
        .map_err(|e| format!("cannot start the broker on {}: {e}", args.broker))?;
    let broker_addr = broker.addr.to_string();

    let collector_args: Vec<String> = [
        "--addr",
        &broker_addr,
        "--http",
        &args.http.to_string(),
        "--data-dir",
        &args.data_dir.join("collector").display().to_string(),
        "--retention-bytes",
        &budget.collector_bytes.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut collector =
        spawn(&collector_bin, &collector_args, &args.data_dir.join("collector.log"))?;
    let ready = wait_for_http(args.http, &mut collector, &stop);
    if !ready {
        let _ = collector.kill();
        let _ = broker.stop();
        return Err(format!(
            "the collector did not start serving on {} (see {})",
            args.http,
            args.data_dir.join("collector.log").display()
        ));
    }

    let mut streamer_args: Vec<String> = vec![
        "--addr".into(),
        broker_addr.clone(),
        "--workers".into(),
        "1".into(),
        "--rate".into(),
        args.rate.to_string(),
    ];
    let source = match &args.file {
        Some(file) => {
            streamer_args.extend(["--file".into(), file.display().to_string(), "--loop".into()]);
            format!("{} (replayed in a loop)", file.display())
        }
        None => {
            streamer_args.extend([
                "--synthetic".into(),
                "--hosts".into(),
                args.hosts.to_string(),
                "--gpus-per-host".into(),
                args.gpus_per_host.to_string(),
            ]);
            format!("synthetic DCGM data, {} hosts × {} GPUs", args.hosts, args.gpus_per_host)
        }
    };
    let mut streamer = spawn(&streamer_bin, &streamer_args, &args.data_dir.join("streamer.log"))?;
    banner(args, &broker_addr, &source);

    let mut client = Client::connect(&[broker_addr.as_str()], ClientConfig::default()).ok();
    let started = Instant::now();
    let mut next_progress = Instant::now() + Duration::from_secs(args.progress.max(1));
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(Some(status)) = streamer.try_wait() {
            eprintln!(
                "the streamer exited ({status}); see {}",
                args.data_dir.join("streamer.log").display()
            );
            break;
        }
        if let Ok(Some(status)) = collector.try_wait() {
            eprintln!(
                "the collector exited ({status}); see {}",
                args.data_dir.join("collector.log").display()
            );
            break;
        }
        if Instant::now() >= next_progress {
            next_progress += Duration::from_secs(args.progress.max(1));
            progress(&mut client, args.http, &args.data_dir, started);
        }
    }

    eprintln!("\nstopping: streamer, then collector, then broker…");
    let streamer_ok = terminate("telemetry-streamer", &mut streamer);
    let collector_ok = terminate("telemetry-collector", &mut collector);
    let broker_ok = match broker.stop() {
        Ok(()) => {
            eprintln!("  mqd stopped");
            true
        }
        Err(e) => {
            eprintln!("  mqd: {e}");
            false
        }
    };
    Ok(streamer_ok && collector_ok && broker_ok)
}

fn banner(args: &Args, broker: &str, source: &str) {
    let http = args.http;
    let bin = bin_dir();
    println!(
        "\nGPU telemetry stack is running.\n\n\
         \x20 broker     {broker}  (data in {data}/broker)\n\
         \x20 disk       at most about {budget} MiB in {data} (--retention-mib)\n\
         \x20 collector  http://{http}  (data in {data}/collector, log {data}/collector.log)\n\
         \x20 streamer   {source}, {rate} records/s (log {data}/streamer.log)\n\n\
         Open http://{http}/ for the dashboard, or try:\n\n\
         \x20 curl -s http://{http}/api/v1/gpus\n\
         \x20 curl -s 'http://{http}/api/v1/gpus/<uuid>/telemetry?limit=5&order=desc&metric=DCGM_FI_DEV_GPU_UTIL'\n\
         \x20 curl -s http://{http}/stats\n\
         \x20 curl -s http://{http}/metrics | head -20\n\
         \x20 {bin}/mqctl --addr {broker} stats\n\
         \x20 {bin}/mqctl --addr {broker} tail telemetry --count 3\n\
         \x20 nc {host} {port}    (then type PING, STATS, TOPICS)\n\n\
         Ctrl-C stops everything.\n",
        data = args.data_dir.display(),
        rate = args.rate,
        budget = if args.retention_mib == 0 { "unlimited".to_string() } else { args.retention_mib.to_string() },
        host = broker.rsplit_once(':').map_or(broker, |(h, _)| h),
        port = broker.rsplit_once(':').map_or("7420", |(_, p)| p),
    );
}

/// Where this build's binaries are, relative to the working directory when it is below it
/// (`target/release`), so that the suggested commands can be pasted as they are.
fn bin_dir() -> String {
    let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf))
    else {
        return "target/release".into();
    };
    let cwd = std::env::current_dir().unwrap_or_default();
    dir.strip_prefix(&cwd).unwrap_or(&dir).display().to_string()
}

/// Waits until the collector accepts HTTP connections (or exits, or we are stopped).
fn wait_for_http(http: SocketAddr, collector: &mut Child, stop: &AtomicBool) -> bool {
    let deadline = Instant::now() + START_WAIT;
    while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
        if matches!(collector.try_wait(), Ok(Some(_))) {
            return false;
        }
        if std::net::TcpStream::connect_timeout(&http, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// How the stack's disk budget is split (`--retention-mib`).
struct Budget {
    /// Size retention of each partition of the broker's topics; 0 for none.
    partition_bytes: u64,
    /// Segment size: small enough that retention drops data in steps of a few MiB, not
    /// the 32 MiB default (16 partitions pre-allocate one segment each).
    segment_bytes: usize,
    /// The collector's `--retention-bytes`; 0 for none.
    collector_bytes: u64,
}

impl Budget {
    /// Segments of the stack's broker: 4 MiB (the broker's floor is twice its 1 MiB frame).
    const SEGMENT_BYTES: usize = 4 * 1024 * 1024;

    fn of(mib: u64) -> Budget {
        let bytes = mib.saturating_mul(1024 * 1024);
        let partitions = Config::disk("127.0.0.1:0".parse().expect("literal"), Path::new("."))
            .core
            .partitions_default as u64;
        // A partition holds its retention plus the segment being written.
        let partition_bytes = (bytes / 2 / partitions).saturating_sub(Self::SEGMENT_BYTES as u64);
        Budget {
            partition_bytes: if mib == 0 { 0 } else { partition_bytes.max(1) },
            segment_bytes: Self::SEGMENT_BYTES,
            collector_bytes: bytes / 2,
        }
    }

    fn broker_config(&self, listen: SocketAddr, dir: &Path) -> Config {
        let mut config = Config::disk(listen, dir);
        config.core.retention.bytes = self.partition_bytes;
        config.disk.segment_bytes = self.segment_bytes;
        config
    }
}

/// Bytes on disk under `dir` (allocated blocks, as `du`: segments are pre-allocated).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => disk_usage(&entry.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// One progress line: what the broker holds, what the collector stored, the lag, and
/// where the data is and how big it is.
fn progress(client: &mut Option<Client>, http: SocketAddr, data_dir: &Path, started: Instant) {
    let mut line = format!("[{:>5}s]", started.elapsed().as_secs());
    if let Some(stats) = client.as_mut().and_then(|c| c.stats().ok()) {
        let published: u64 =
            stats.topics.iter().filter(|t| t.name == "telemetry").map(|t| t.records_in).sum();
        let lag: u64 = stats.groups.iter().filter(|g| g.topic == "telemetry").map(|g| g.lag).sum();
        line.push_str(&format!(" published {published}  group lag {lag}"));
    }
    let url = format!("http://{http}/stats");
    match reqwest::blocking::Client::new().get(&url).timeout(Duration::from_secs(2)).send() {
        Ok(resp) => {
            if let Ok(v) = resp.json::<serde_json::Value>() {
                line.push_str(&format!(
                    "  stored {} samples of {} GPUs",
                    v["samples_stored"].as_u64().unwrap_or(0),
                    v["gpus"].as_u64().unwrap_or(0)
                ));
            }
        }
        Err(_) => line.push_str("  collector not answering"),
    }
    let mib = disk_usage(data_dir) as f64 / (1024.0 * 1024.0);
    line.push_str(&format!("  data {} {mib:.0} MiB", data_dir.display()));
    println!("{line}");
}

/// SIGTERM, then wait for a graceful exit; SIGKILL after the grace period.
fn terminate(name: &str, child: &mut Child) -> bool {
    if let Ok(Some(status)) = child.try_wait() {
        eprintln!("  {name} had already exited ({status})");
        return status.success();
    }
    let pid = rustix::process::Pid::from_raw(child.id() as i32);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + STOP_GRACE;
    let status: Option<ExitStatus> = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => break None,
        }
    };
    match status {
        Some(status) => {
            eprintln!("  {name} stopped ({status})");
            status.success()
        }
        None => {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("  {name} did not stop within {} s and was killed", STOP_GRACE.as_secs());
            false
        }
    }
}
