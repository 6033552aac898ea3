//! `mq-bench`: throughput and end-to-end latency of a running `mqd`, in the manner of
//! `nats bench`.
//!
//! N publisher threads and M subscriber threads, each with its own connection. Every
//! record starts with a 16-byte header (send time on a clock all threads share, publisher,
//! sequence number), so subscribers measure end-to-end latency into an HDR histogram and
//! tell first deliveries from duplicates. Subscribers are separate groups (each receives
//! every record) or, with `--subscribers-share`, members of one group; the groups are
//! ephemeral (`bench-<pid>-<n>`), so the broker deletes them when the run ends. The run ends
//! when every group has received every record the broker placed, or after `--timeout`.
//!
//! Output: progress each second on stderr, a summary, and with `--json` one JSON object as
//! the last line of stdout. Exit codes: 0 ok, 1 a broker error or records missing at the
//! timeout, 2 a usage error.

mod publisher;
mod report;
mod shared;
mod subscriber;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use mq_client::{
    Client, ClientConfig, ClientError, ConsumerConfig, ProducerConfig, StartPosition, TopicSettings,
};
use mq_tools::{split_addrs, ADDR_DEFAULT};

use publisher::{Plan, Published};
use report::Report;
use shared::{Shared, HEADER_BYTES};
use subscriber::Received;

/// Measure publish and end-to-end throughput and latency of a running mqd.
#[derive(Debug, Clone, Parser)]
#[command(name = "mq-bench", version)]
pub struct Args {
    /// TOML file of these flags (`count = 1000000`, `rate = 10000`); flags on the command
    /// line win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Broker address; several, comma-separated, are tried in order.
    #[arg(long, env = "MQ_ADDR", default_value = ADDR_DEFAULT, value_name = "HOST:PORT")]
    pub addr: String,
    /// Topic to publish to.
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Records per publisher [default: 1000000 unless --duration is given].
    #[arg(long, value_name = "N", conflicts_with = "duration")]
    pub count: Option<u64>,
    /// Publish for this long instead of a fixed count.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Bytes per record (at least 16, the bench header).
    #[arg(long, default_value_t = 200, value_name = "BYTES")]
    pub size: usize,
    /// Publisher threads, each with its own connection.
    #[arg(long, default_value_t = 1, value_name = "P")]
    pub publishers: u32,
    /// Subscriber threads; each is its own group unless --subscribers-share. The groups are
    /// ephemeral: the broker deletes them when the run ends.
    #[arg(long, default_value_t = 1, value_name = "S")]
    pub subscribers: u32,
    /// Put all subscribers in one group (they split the partitions).
    #[arg(long)]
    pub subscribers_share: bool,
    /// Records per PUBLISH batch.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub batch: usize,
    /// Bytes per PUBLISH batch at most.
    #[arg(long, default_value_t = 256 * 1024, value_name = "BYTES")]
    pub batch_bytes: usize,
    /// A batch goes out at the latest this long after its first record.
    #[arg(long, default_value_t = 1000, value_name = "MICROSECONDS")]
    pub linger_us: u64,
    /// Batches in flight per publisher.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub in_flight: usize,
    /// Credit of each subscription (records in flight).
    #[arg(long, default_value_t = 8192, value_name = "N")]
    pub credit: u32,
    /// Acks per ACK frame; 0 for a quarter of the credit.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub ack_batch: usize,
    /// Records per second per publisher (a paced sender, for latency at a fixed load);
    /// unlimited if not given.
    #[arg(long, value_name = "R")]
    pub rate: Option<f64>,
    /// Create the topic with this many partitions first; 0 leaves it to the broker.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub partitions: u32,
    /// Cycle through this many keys; 0 sends unkeyed records (round-robin partitions).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub keys: u32,
    /// Publishers wait while the slowest group is this many records behind, so that
    /// retention never drops a record before it is delivered; 0 for no bound.
    #[arg(long, default_value_t = 200_000, value_name = "RECORDS")]
    pub max_lag: u64,
    /// How long to wait for subscribers after publishing ends.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub timeout: f64,
    /// Print the result as one JSON object on the last line of stdout (the summary goes to
    /// stderr).
    #[arg(long)]
    pub json: bool,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = match mq_tools::args_with_config(std::env::args_os().collect()) {
        Ok(argv) => Args::parse_from(argv),
        Err(e) => {
            use clap::CommandFactory;
            Args::command().error(clap::error::ErrorKind::Io, e).exit()
        }
    };
    if let Err(message) = check(&args) {
        use clap::CommandFactory;
        Args::command().error(clap::error::ErrorKind::InvalidValue, message).exit();
    }
    match run(&args) {
        Ok(report) => {
            report.print(&args);
            if report.missing > 0 {
                eprintln!("mq-bench: {} records never arrived before the timeout", report.missing);
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mq-bench: {e}");
            ExitCode::from(1)
        }
    }
}

fn check(args: &Args) -> Result<(), String> {
    if args.size < HEADER_BYTES {
        return Err(format!("--size must be at least {HEADER_BYTES} bytes (the bench header)"));
    }
    if args.publishers == 0 {
        return Err("--publishers must be at least 1".into());
    }
    if args.count.is_some_and(|n| n > u64::from(u32::MAX)) {
        return Err("--count is at most 4294967295 per publisher".into());
    }
    if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err("--rate must be a positive number".into());
    }
    let positive = |s: f64| s > 0.0 && s.is_finite();
    if args.duration.is_some_and(|d| !positive(d))
        || !(positive(args.timeout) || args.timeout == 0.0)
    {
        return Err("--duration and --timeout are positive numbers of seconds".into());
    }
    Ok(())
}

fn run(args: &Args) -> Result<Report, ClientError> {
    let addrs = split_addrs(&args.addr);
    let config = ClientConfig::default();
    let mut client = Client::connect(&addrs, config)?;
    let info = client.info()?;
    if args.partitions > 0 {
        let settings = TopicSettings {
            topic: args.topic.clone(),
            partitions: args.partitions,
            retention_bytes: 0,
            retention_ms: 0,
        };
        client.create_topic(&settings)?;
    }
    let groups = match (args.subscribers, args.subscribers_share) {
        (0, _) => 0,
        (_, true) => 1,
        (s, false) => s as usize,
    };
    let shared = Shared::new(groups);
    let consumers = (0..args.subscribers as usize)
        .map(|i| {
            let group = if args.subscribers_share { 0 } else { i };
            let name = format!("bench-{}-{group}", std::process::id());
            // Ephemeral: the bench's groups go when its subscribers do, instead of staying
            // on the broker with the lag of every record published after the run.
            let subscription = ConsumerConfig {
                start: StartPosition::Latest,
                credit: args.credit,
                ack_batch: args.ack_batch,
                ephemeral: true,
            };
            client.subscribe(&args.topic, &name, subscription).map(|c| (group, c))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let producer_config = ProducerConfig {
        batch_records: args.batch,
        batch_bytes: args.batch_bytes,
        linger: Duration::from_micros(args.linger_us),
        max_in_flight_batches: args.in_flight,
    };
    let producers = (0..args.publishers)
        .map(|_| client.producer(producer_config.clone()))
        .collect::<Result<Vec<_>, _>>()?;

    let start = shared.start_now();
    let deadline = args.duration.map(|d| start + Duration::from_secs_f64(d));
    let count = if deadline.is_some() { None } else { Some(args.count.unwrap_or(1_000_000)) };
    let (published, received) = thread::scope(|scope| {
        let subscribers: Vec<_> = consumers
            .into_iter()
            .map(|(group, consumer)| {
                let shared = &shared;
                let publishers = args.publishers as usize;
                thread::Builder::new()
                    .name(format!("sub-{group}"))
                    .spawn_scoped(scope, move || {
                        subscriber::run(consumer, group, publishers, shared)
                    })
                    .expect("thread starts")
            })
            .collect();
        let publishers: Vec<_> = producers
            .into_iter()
            .enumerate()
            .map(|(index, producer)| {
                let plan = Plan {
                    index: index as u32,
                    topic: args.topic.clone(),
                    size: args.size,
                    count,
                    deadline,
                    rate: args.rate,
                    keys: args.keys,
                    lag_max: if groups > 0 { args.max_lag } else { 0 },
                };
                let shared = &shared;
                thread::Builder::new()
                    .name(format!("pub-{index}"))
                    .spawn_scoped(scope, move || publisher::run(producer, &plan, shared))
                    .expect("thread starts")
            })
            .collect();
        watch(args, &shared, &publishers, &subscribers);
        let published: Vec<Result<Published, ClientError>> =
            publishers.into_iter().map(|h| h.join().expect("publisher thread")).collect();
        let received: Vec<Result<Received, ClientError>> =
            subscribers.into_iter().map(|h| h.join().expect("subscriber thread")).collect();
        (published, received)
    });
    let published = published.into_iter().collect::<Result<Vec<_>, _>>()?;
    let received = received.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(Report::new(args, &info, start, &published, received, groups))
}

/// Prints progress every second until the publishers are done and every group has what
/// they placed, or the timeout after publishing passes (then tells everyone to stop).
fn watch<P, S>(
    args: &Args,
    shared: &Shared,
    publishers: &[thread::ScopedJoinHandle<'_, P>],
    subscribers: &[thread::ScopedJoinHandle<'_, S>],
) {
    let start = shared.start_line();
    let mut last = (start, 0u64, 0u64);
    let mut next_report = start + Duration::from_secs(1);
    let mut give_up: Option<Instant> = None;
    loop {
        thread::sleep(Duration::from_millis(20));
        let now = Instant::now();
        let publishing = publishers.iter().any(|h| !h.is_finished());
        if !publishing && shared.expected.load(Ordering::Relaxed) == u64::MAX {
            shared.expected.store(shared.placed.load(Ordering::Relaxed), Ordering::Relaxed);
            give_up = Some(now + Duration::from_secs_f64(args.timeout));
        }
        if !publishing && subscribers.iter().all(|h| h.is_finished()) {
            break;
        }
        if give_up.is_some_and(|t| now >= t) {
            shared.stop.store(true, Ordering::Relaxed);
        }
        if now >= next_report {
            next_report += Duration::from_secs(1);
            let (placed, received) = (shared.placed.load(Ordering::Relaxed), shared.received());
            if !args.quiet {
                let seconds = now.duration_since(last.0).as_secs_f64();
                let groups = shared.group_received.len().max(1) as u64;
                eprintln!(
                    "[{:5.1}s] published {:>12} ({:>11})  received {:>12} ({:>11})",
                    now.duration_since(start).as_secs_f64(),
                    mq_tools::human_count(placed),
                    mq_tools::human_rate(Some((placed - last.1) as f64 / seconds)),
                    mq_tools::human_count(received / groups),
                    mq_tools::human_rate(Some(
                        (received - last.2) as f64 / groups as f64 / seconds
                    )),
                );
            }
            last = (now, placed, received);
        }
    }
}
