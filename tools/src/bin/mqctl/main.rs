//! `mqctl`: look at and talk to a running `mqd`.
//!
//! Every listing prints a table for people, or with `--json` the broker's JSON document
//! (`spec/wire.md`, admin documents) on one line. Exit codes: 0 success, 1 a broker error
//! or an unreachable broker, 2 a usage error.

mod raw;
mod show;

use std::io::{self, BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use mq_client::protocol::admin::StatsReply;
use mq_client::{
    Client, ClientConfig, ClientError, Consumer, ConsumerConfig, Endpoints, Message,
    ProducerConfig, StartPosition, TopicSettings,
};
use mq_tools::{split_addrs, ADDR_DEFAULT};
use serde_json::json;

/// Look at and talk to a running mqd.
#[derive(Debug, Parser)]
#[command(name = "mqctl", version, after_help = "Exit codes: 0 ok, 1 broker error, 2 usage error.")]
struct Cli {
    /// TOML file of these global flags (`addr`, `timeout_ms`); flags on the command line win.
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Broker address; several, comma-separated, are tried in order.
    #[arg(long, env = "MQ_ADDR", default_value = ADDR_DEFAULT, value_name = "HOST:PORT")]
    addr: String,
    /// How long to wait for a connection and for each reply.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    timeout_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Counters per topic, partition and group, with rates over an interval.
    Stats {
        /// Print the STATS document instead of tables (one sample, no rates).
        #[arg(long)]
        json: bool,
        /// Seconds between the two samples the rates come from; 0 for totals only.
        #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
        interval: f64,
    },
    /// Topics with their partitions, retention and record counts.
    Topics {
        /// Print the TOPICS document.
        #[arg(long)]
        json: bool,
    },
    /// Consumer groups with members, lag and records in flight.
    Groups {
        /// Print the GROUPS document.
        #[arg(long)]
        json: bool,
    },
    /// The broker's health; exits 1 unless it is "ok".
    Health {
        /// Print the HEALTH document.
        #[arg(long)]
        json: bool,
    },
    /// The broker's version, storage and limits.
    Info {
        /// Print the INFO document.
        #[arg(long)]
        json: bool,
    },
    /// Create a topic (succeeds if it exists with the same settings).
    CreateTopic {
        /// Topic name.
        name: String,
        /// Partitions; 0 for the broker's default.
        #[arg(long, default_value_t = 0)]
        partitions: u32,
        /// Retention by size per partition; 0 for the broker's default.
        #[arg(long, default_value_t = 0, value_name = "BYTES")]
        retention_bytes: u64,
        /// Retention by age; 0 for the broker's default.
        #[arg(long, default_value_t = 0, value_name = "MS")]
        retention_ms: u64,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a consumer group that has no members, with its committed offsets.
    DeleteGroup {
        /// Topic.
        topic: String,
        /// Consumer group.
        group: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print records of a topic as they arrive, acknowledging each.
    Tail {
        /// Topic.
        topic: String,
        /// Consumer group, durable: it keeps its offsets after tail exits [default:
        /// mqctl-tail-<pid>, an ephemeral group of its own that the broker deletes when
        /// tail exits].
        #[arg(long)]
        group: Option<String>,
        /// Where a new group starts.
        #[arg(long, value_enum, default_value = "latest")]
        from: From,
        /// Stop after this many records.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Most records in flight.
        #[arg(long, default_value_t = 1024)]
        credit: u32,
        /// One JSON object per record.
        #[arg(long)]
        json: bool,
    },
    /// Publish one record, or one record per line of stdin with `-`.
    Publish {
        /// Topic.
        topic: String,
        /// Record key (same key, same partition).
        #[arg(long)]
        key: Option<String>,
        /// The payload, or `-` to read records from stdin, one per line.
        payload: String,
        /// Print the placement as JSON.
        #[arg(long)]
        json: bool,
    },
    /// An interactive text-dialect session (stdin to the broker, the broker to stdout).
    Raw {
        /// How long to wait for the last replies after stdin ends.
        #[arg(long, default_value_t = 2000, value_name = "MS")]
        linger_ms: u64,
    },
}

/// Start positions of a new group, as `--from` words.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum From {
    Earliest,
    Latest,
    Committed,
}

impl From {
    fn position(self) -> StartPosition {
        match self {
            From::Earliest => StartPosition::Earliest,
            From::Latest => StartPosition::Latest,
            From::Committed => StartPosition::Committed,
        }
    }
}

/// Why a command failed: the exit code says whose fault it was.
enum Failure {
    Usage(String),
    Broker(String),
}

impl std::convert::From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure::Broker(e.to_string())
    }
}

impl std::convert::From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Broker(e.to_string())
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = match mq_tools::args_with_config(std::env::args_os().collect()) {
        Ok(args) => Cli::parse_from(args),
        Err(e) => Cli::command().error(clap::error::ErrorKind::Io, e).exit(),
    };
    match run(cli) {
        Ok(code) => code,
        Err(Failure::Usage(message)) => {
            Cli::command().error(clap::error::ErrorKind::InvalidValue, message).exit()
        }
        Err(Failure::Broker(message)) => {
            eprintln!("mqctl: {message}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let addrs = split_addrs(&cli.addr);
    if addrs.is_empty() {
        return Err(Failure::Usage("--addr names no address".into()));
    }
    let timeout = Duration::from_millis(cli.timeout_ms);
    let config = ClientConfig {
        connect_timeout: timeout,
        request_timeout: timeout,
        backoff: mq_client::BackoffConfig::never(),
        ..ClientConfig::default()
    };
    if let Command::Raw { linger_ms } = cli.command {
        let stream = Endpoints::new(&addrs).connect(timeout)?;
        raw::run(stream, Duration::from_millis(linger_ms))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut client = Client::connect(&addrs, config)?;
    let mut out = io::stdout().lock();
    match cli.command {
        Command::Stats { json, interval } => stats(&mut client, json, interval, &mut out)?,
        Command::Topics { json } => {
            let r = client.topics()?;
            print(&mut out, json, &r, show::topics)?;
        }
        Command::Groups { json } => {
            let r = client.groups()?;
            print(&mut out, json, &r, show::groups)?;
        }
        Command::Health { json } => {
            let r = client.health()?;
            print(&mut out, json, &r, show::health)?;
            if r.status != "ok" {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Info { json } => {
            let r = client.info()?;
            print(&mut out, json, &r, show::info)?;
        }
        Command::CreateTopic { name, partitions, retention_bytes, retention_ms, json } => {
            let settings = TopicSettings { topic: name, partitions, retention_bytes, retention_ms };
            client.create_topic(&settings).map_err(usage_if_invalid)?;
            if json {
                writeln!(out, "{}", json!({"created": settings.topic}))?;
            } else {
                writeln!(out, "created topic {}", settings.topic)?;
            }
        }
        Command::DeleteGroup { topic, group, json } => {
            client.delete_group(&topic, &group).map_err(usage_if_invalid)?;
            if json {
                writeln!(out, "{}", json!({"deleted": {"topic": topic, "group": group}}))?;
            } else {
                writeln!(out, "deleted group {group} on {topic}")?;
            }
        }
        Command::Tail { topic, group, from, count, credit, json } => {
            // A group of its own is made for this one look: ephemeral, so it goes with us
            // instead of staying behind with a growing lag.
            let ephemeral = group.is_none();
            let group = group.unwrap_or_else(|| format!("mqctl-tail-{}", std::process::id()));
            let subscription =
                ConsumerConfig { start: from.position(), credit, ack_batch: 0, ephemeral };
            let consumer =
                client.subscribe(&topic, &group, subscription).map_err(usage_if_invalid)?;
            tail(consumer, count, json, &mut out)?;
        }
        Command::Publish { topic, key, payload, json } => {
            publish(&client, &topic, key.as_deref(), &payload, json, &mut out)?;
        }
        Command::Raw { .. } => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}

/// A request refused before sending (bad name or key) is the user's mistake: exit 2.
fn usage_if_invalid(e: ClientError) -> Failure {
    match e {
        ClientError::InvalidRequest(p) => Failure::Usage(p.to_string()),
        other => other.into(),
    }
}

fn print<T: serde::Serialize>(
    out: &mut impl Write,
    json: bool,
    document: &T,
    table: fn(&T) -> String,
) -> io::Result<()> {
    if json {
        let text = serde_json::to_string(document).map_err(io::Error::other)?;
        writeln!(out, "{text}")
    } else {
        write!(out, "{}", table(document))
    }
}

fn stats(
    client: &mut Client,
    json: bool,
    interval: f64,
    out: &mut impl Write,
) -> Result<(), Failure> {
    if !interval.is_finite() || interval < 0.0 {
        return Err(Failure::Usage(format!("--interval {interval} is not a number of seconds")));
    }
    let first: StatsReply = client.stats()?;
    if json || interval == 0.0 {
        print(out, json, &first, |s| show::stats(s, None))?;
        return Ok(());
    }
    std::thread::sleep(Duration::from_secs_f64(interval));
    let second = client.stats()?;
    let seconds = (second.uptime_ms.saturating_sub(first.uptime_ms)) as f64 / 1000.0;
    let earlier = show::Earlier::new(&first, seconds.max(interval.min(0.001)));
    write!(out, "{}", show::stats(&second, Some(&earlier)))?;
    Ok(())
}

fn tail(
    mut consumer: Consumer,
    count: Option<u64>,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let mut printed = 0u64;
    while count.is_none_or(|n| printed < n) {
        for message in consumer.poll(Duration::from_millis(500))? {
            if count.is_some_and(|n| printed >= n) {
                break; // not acknowledged: it goes to the next reader of the group
            }
            writeln!(out, "{}", render(&message, json))?;
            consumer.ack(&message)?;
            printed += 1;
        }
        out.flush()?;
    }
    consumer.close()?;
    Ok(())
}

fn render(m: &Message, json: bool) -> String {
    let key = m.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned());
    let value = String::from_utf8_lossy(&m.value);
    if json {
        json!({
            "topic": &*m.topic,
            "partition": m.partition,
            "offset": m.offset,
            "attempt": m.attempt,
            "timestamp_ms": m.timestamp_ms,
            "key": key,
            "value": value,
        })
        .to_string()
    } else {
        let key = key.map(|k| format!(" key={k}")).unwrap_or_default();
        format!("{}:{}{key} {value}", m.partition, m.offset)
    }
}

fn publish(
    client: &Client,
    topic: &str,
    key: Option<&str>,
    payload: &str,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let mut producer = client.producer(ProducerConfig::default())?;
    let key = key.map(str::as_bytes);
    if payload != "-" {
        producer.send(topic, key, payload.as_bytes()).map_err(usage_if_invalid)?;
        let outcome = producer.flush()?.pop().expect("one record, one outcome");
        let p = outcome.result?;
        if json {
            writeln!(out, "{}", json!({"partition": p.partition, "offset": p.offset}))?;
        } else {
            writeln!(out, "partition {} offset {}", p.partition, p.offset)?;
        }
        return Ok(());
    }
    let mut outcomes = Vec::new();
    for line in io::stdin().lock().split(b'\n') {
        let mut line = line?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        producer.send(topic, key, &line).map_err(usage_if_invalid)?;
        outcomes.extend(producer.poll()?);
    }
    outcomes.extend(producer.flush()?);
    if let Some(failed) = outcomes.iter().find_map(|o| o.result.as_ref().err()) {
        let n = outcomes.iter().filter(|o| o.result.is_err()).count();
        return Err(Failure::Broker(format!("{n} of {} records failed: {failed}", outcomes.len())));
    }
    if json {
        writeln!(out, "{}", json!({"published": outcomes.len()}))?;
    } else {
        writeln!(out, "published {} records to {topic}", outcomes.len())?;
    }
    Ok(())
}
