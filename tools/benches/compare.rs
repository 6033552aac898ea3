//! Side by side: `mqd` against NATS (core pub/sub and JetStream) and Redis Streams, on this
//! machine, in one run.
//!
//! ```sh
//! apt-get install -y nats-server redis-server        # the servers (not started as services)
//! cargo build --release -p mq-broker --bin mqd       # the broker binary this bench starts
//! cargo bench -p mq-tools --bench compare            # about 6 to 10 minutes
//! COMPARE_CASES=mqd-memory,nats-core COMPARE_RUNS=1 cargo bench -p mq-tools --bench compare
//! ```
//!
//! **Method.** For every run the bench starts the server process itself (fresh data directory
//! under `COMPARE_DIR`, default `/var/tmp`; a free loopback port), connects, and runs the
//! workload of `mq-bench` with the same client-side structure for every system: one
//! publisher thread and one subscriber thread, each with its own connection, 200-byte
//! payloads whose first 16 bytes carry the send time (or, paced, the time the record was
//! *due*), the publisher number and a sequence number. The subscriber records end-to-end
//! latency in an HDR histogram, tells first deliveries from duplicates with a bitmap, and
//! acknowledges what it got. The publisher never runs more than 200,000 records ahead of the
//! subscriber (`mq-bench --max-lag`), so no system is pushed into dropping or spilling.
//! End-to-end rate = distinct records received / time from the start to the last one;
//! publish rate = records acknowledged by the server / time to the last acknowledgement.
//!
//! Two workloads: throughput (`COMPARE_COUNT`, default 1,000,000 records, as fast as
//! possible, publisher batching 256 records per write with 16 batches (4,096 records) in
//! flight, as `mq-bench`'s defaults), and latency at a fixed rate (`COMPARE_LATENCY_COUNT`,
//! default 50,000 records at `COMPARE_RATE` = 10,000 records/s, every record written to the
//! socket when it is due, no linger, for every system, with up to 4,096 one-record writes
//! awaiting acknowledgement so that no sender waits for them). Each run starts with a
//! warm-up on the same connections that is not measured (`COMPARE_WARMUP`, default 100,000
//! records as fast as possible, or `COMPARE_WARMUP_LATENCY`, default 5,000 records paced):
//! every server starts fresh and would otherwise be measured growing its memory and files.
//! Every case runs `COMPARE_RUNS`
//! (default 3) times, interleaved (A B C … A B C …) so that noise on this shared machine
//! hits all alike; before each run the bench waits (at most `COMPARE_QUIET_S`, default 10 s)
//! for a second in which the machine is at least 90 % idle and records how idle it was.
//! Output: one line per run on stderr, one JSON object per run and one per case (medians)
//! on stdout, then the tables of medians in Markdown.
//!
//! **Clients.**
//! - mqd: our `mq_client` `Producer` and `Consumer`, configured as `mq-bench` does (batch 256
//!   records or 256 KiB, linger 1 ms or 0 when paced, 16 batches in flight, credit 8192,
//!   acks every 2048 records and on every poll, one ack per record in range frames).
//! - NATS: a hand-written client for the NATS text protocol over a `TcpStream` (CONNECT,
//!   PUB, SUB, MSG/HMSG, PING/PONG): no library threads or channels between the socket and
//!   the bench, so the client costs about what ours costs. Core: `PUB bench`, `SUB bench`;
//!   no persistence, no acknowledgement either way (at most once). JetStream: a file-storage
//!   stream on `bench` (the server's default sync interval, 2 minutes, is what nats-server
//!   2.9 offers; `sync_interval: always` came with 2.10), publishes with a reply subject,
//!   each PubAck counted, at most 4,096 unacknowledged (as our 16 × 256); a durable pull
//!   consumer with `AckAll` (`COMPARE_JS_ACK=explicit` for one `+ACK` per message): pull
//!   requests of 4,096 messages with at most 8,192 requested and not yet delivered (our
//!   credit), the last message of every read acknowledged (acks everything before it, as
//!   our range acks do).
//! - Redis Streams: the `redis` crate's sync connection and RESP parser. Publisher: `XADD
//!   bench * d <payload>` packed by hand, pipelined 256 commands per write and 16 writes in
//!   flight (no `MAXLEN`: nothing is trimmed during a run, as on mqd's disk). Subscriber: a
//!   consumer group (`XGROUP CREATE … MKSTREAM` before the start), `XREADGROUP … COUNT 2048
//!   BLOCK 50`, the `XACK` of every id of the previous read pipelined in front of the next
//!   `XREADGROUP`. Server: `--appendonly yes --appendfsync always|everysec --save ''` and
//!   automatic AOF rewrite off (it would fork and copy during the run).
//!
//! `mqd-memory-thp-off` is `mqd-memory` with `MIMALLOC_ALLOW_THP=0` in the broker's
//! environment: mimalloc `madvise`s its arenas for transparent huge pages, and on this VM
//! faulting in a 2 MiB page stalls the broker's event loop for milliseconds (the tail of
//! `mqd-memory` at 10,000 records/s). The other mqd cases run the binary as it ships.
//!
//! The bench is a `harness = false` bench: it runs only when cargo passes `--bench`
//! (`cargo bench`), and returns at once otherwise (`cargo test --benches`, `--list`).
//! A system whose server binary is missing is skipped with a message. Binaries: `MQD`
//! (default `target/release/mqd` of this workspace), `NATS_SERVER`, `REDIS_SERVER` (default:
//! found on `PATH`).

use std::collections::VecDeque;
use std::error::Error;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mq_client::{Client, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig};
use serde_json::json;

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// Bytes per record, header included.
const SIZE: usize = 200;
/// Send time (8), publisher (4), sequence number (4), big-endian, as `mq-bench`.
const HEADER_BYTES: usize = 16;
/// Records per write (a batch), as `mq-bench --batch`.
const BATCH: usize = 256;
/// Batches awaiting acknowledgement at once, as `mq-bench --in-flight`.
const IN_FLIGHT_BATCHES: usize = 16;
/// Records awaiting acknowledgement at once, for every system: 16 batches of 256 under
/// load; when paced, where every record is its own write, 4,096 writes of one record (so
/// that no system's sender waits for acknowledgements at 10,000 records/s).
const IN_FLIGHT_RECORDS: usize = BATCH * IN_FLIGHT_BATCHES;
/// Records the publisher may run ahead of the subscriber, as `mq-bench --max-lag`.
const MAX_LAG: u64 = 200_000;
/// Records delivered and not yet acknowledged, as `mq-bench --credit`.
const CREDIT: u64 = 8192;
/// How long the subscriber waits in one poll.
const POLL: Duration = Duration::from_millis(50);
/// How long to wait for the last records after publishing ends.
const TIMEOUT: Duration = Duration::from_secs(30);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--test" || a == "--list") || !args.iter().any(|a| a == "--bench") {
        println!("compare: starts servers and runs for minutes; only under `cargo bench`");
        return;
    }
    let settings = Settings::from_env();
    println!("{}", machine_state(&settings));
    let cases: Vec<Case> = Case::ALL
        .into_iter()
        .filter(|c| settings.only.as_ref().is_none_or(|only| only.iter().any(|o| o == c.name())))
        .filter(|c| match c.program(&settings) {
            Ok(_) => true,
            Err(why) => {
                println!("compare: skipping {}: {why}", c.name());
                false
            }
        })
        .collect();
    let mut results: Vec<RunResult> = Vec::new();
    for mode in settings.modes.clone() {
        for run in 1..=settings.runs {
            for &case in &cases {
                let idle = wait_quiet(settings.quiet);
                let result = match run_case(case, mode, run, &settings) {
                    Ok(mut r) => {
                        r.idle_before = idle;
                        r
                    }
                    Err(e) => RunResult::failed(case, mode, run, idle, e.to_string()),
                };
                eprintln!("{}", result.line());
                println!("{}", result.json());
                results.push(result);
            }
        }
    }
    summarize(&cases, &settings, &results);
}

/// What the environment asks for.
#[derive(Debug, Clone)]
struct Settings {
    count: u64,
    latency_count: u64,
    warmup: u64,
    warmup_latency: u64,
    rate: f64,
    runs: usize,
    only: Option<Vec<String>>,
    modes: Vec<Mode>,
    dir: PathBuf,
    quiet: Duration,
    js_ack_explicit: bool,
    mqd: PathBuf,
    nats: PathBuf,
    redis: PathBuf,
}

impl Settings {
    fn from_env() -> Settings {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
            std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
        }
        let list = |name: &str| {
            std::env::var(name).ok().map(|v| {
                v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
            })
        };
        let modes: Vec<Mode> = list("COMPARE_MODES")
            .map(|m: Vec<String>| {
                m.iter()
                    .filter_map(|m| {
                        [Mode::Throughput, Mode::Latency].into_iter().find(|x| x.name() == m)
                    })
                    .collect()
            })
            .unwrap_or_else(|| vec![Mode::Throughput, Mode::Latency]);
        let workspace =
            Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tools/ has a parent");
        let path =
            |name: &str, default: PathBuf| std::env::var_os(name).map_or(default, PathBuf::from);
        Settings {
            count: var("COMPARE_COUNT", 1_000_000),
            latency_count: var("COMPARE_LATENCY_COUNT", 50_000),
            warmup: var("COMPARE_WARMUP", 100_000),
            warmup_latency: var("COMPARE_WARMUP_LATENCY", 5_000),
            rate: var("COMPARE_RATE", 10_000.0),
            runs: var("COMPARE_RUNS", 3),
            only: list("COMPARE_CASES"),
            modes,
            dir: path("COMPARE_DIR", PathBuf::from("/var/tmp")),
            quiet: Duration::from_secs_f64(var("COMPARE_QUIET_S", 10.0)),
            js_ack_explicit: std::env::var("COMPARE_JS_ACK").is_ok_and(|v| v == "explicit"),
            mqd: path("MQD", workspace.join("target/release/mqd")),
            nats: path("NATS_SERVER", PathBuf::from("nats-server")),
            redis: path("REDIS_SERVER", PathBuf::from("redis-server")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// As fast as possible, `count` records.
    Throughput,
    /// Paced at `rate`, `latency_count` records.
    Latency,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Throughput => "throughput",
            Mode::Latency => "latency",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    MqdMemory,
    MqdMemoryThpOff,
    MqdAlways,
    MqdInterval,
    NatsCore,
    NatsJetStream,
    RedisAlways,
    RedisEverysec,
}

impl Case {
    const ALL: [Case; 8] = [
        Case::MqdMemory,
        Case::MqdMemoryThpOff,
        Case::MqdAlways,
        Case::MqdInterval,
        Case::NatsCore,
        Case::NatsJetStream,
        Case::RedisAlways,
        Case::RedisEverysec,
    ];

    fn name(self) -> &'static str {
        match self {
            Case::MqdMemory => "mqd-memory",
            Case::MqdMemoryThpOff => "mqd-memory-thp-off",
            Case::MqdAlways => "mqd-fsync-always",
            Case::MqdInterval => "mqd-fsync-interval100",
            Case::NatsCore => "nats-core",
            Case::NatsJetStream => "nats-jetstream-file",
            Case::RedisAlways => "redis-aof-always",
            Case::RedisEverysec => "redis-aof-everysec",
        }
    }

    /// What an acknowledged publish means, and what the subscriber's ack does.
    fn guarantee(self) -> &'static str {
        match self {
            Case::MqdMemory | Case::MqdMemoryThpOff => {
                "acked when stored in memory; consumer acks, redelivery"
            }
            Case::MqdAlways => "acked after fsync (group commit); consumer acks, redelivery",
            Case::MqdInterval => "acked on append, fsync every 100 ms; consumer acks",
            Case::NatsCore => "no persistence, no acks either way (at most once)",
            Case::NatsJetStream => "acked when written to the OS, fsync every 2 min; consumer acks",
            Case::RedisAlways => "acked after fsync of the AOF (group commit); XACK",
            Case::RedisEverysec => "acked before fsync, AOF fsync every 1 s; XACK",
        }
    }

    fn program(self, s: &Settings) -> std::result::Result<PathBuf, String> {
        let program = match self {
            Case::MqdMemory | Case::MqdMemoryThpOff | Case::MqdAlways | Case::MqdInterval => &s.mqd,
            Case::NatsCore | Case::NatsJetStream => &s.nats,
            Case::RedisAlways | Case::RedisEverysec => &s.redis,
        };
        find_program(program).ok_or_else(|| format!("{} not found", program.display()))
    }

    fn command(self, s: &Settings, port: u16, dir: &Path) -> Result<Command> {
        let mut cmd = Command::new(self.program(s)?);
        let listen = format!("127.0.0.1:{port}");
        let port = port.to_string();
        match self {
            Case::MqdMemory => {
                cmd.env_remove("MIMALLOC_ALLOW_THP");
                cmd.args(["--listen", &listen, "--storage", "memory"])
            }
            Case::MqdMemoryThpOff => {
                // mimalloc asks for transparent huge pages on its arenas (`madvise`); faulting
                // one in stalls the event loop for milliseconds on this VM. Off here.
                cmd.env("MIMALLOC_ALLOW_THP", "0");
                cmd.args(["--listen", &listen, "--storage", "memory"])
            }
            Case::MqdAlways | Case::MqdInterval => {
                let fsync = if self == Case::MqdAlways { "always" } else { "interval:100" };
                cmd.env_remove("MIMALLOC_ALLOW_THP");
                cmd.args(["--listen", &listen, "--storage", "disk", "--fsync", fsync]);
                cmd.arg("--data-dir").arg(dir)
            }
            Case::NatsCore => cmd.args(["-a", "127.0.0.1", "-p", &port]),
            Case::NatsJetStream => {
                cmd.args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"]).arg(dir)
            }
            Case::RedisAlways | Case::RedisEverysec => {
                let fsync = if self == Case::RedisAlways { "always" } else { "everysec" };
                cmd.args(["--bind", "127.0.0.1", "--port", &port, "--save", ""]);
                cmd.args(["--appendonly", "yes", "--appendfsync", fsync]);
                cmd.args(["--auto-aof-rewrite-percentage", "0", "--dir"]).arg(dir)
            }
        };
        Ok(cmd)
    }
}

/// `program` itself if it has a slash, else the first match on `PATH`.
fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------------------
// Servers

/// A server process of one run, stopped (SIGTERM) and its data directory removed on drop.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(case: Case, s: &Settings) -> Result<Server> {
        let dir = tempfile::Builder::new().prefix("compare-").tempdir_in(&s.dir)?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        let mut cmd = case.command(s, port, &data)?;
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let mut child = cmd.spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                let log =
                    std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
                return Err(format!("{} exited with {status}: {log}", case.name()).into());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!("{} did not listen within 10 s", case.name()).into());
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(Server { child, port, _dir: dir })
    }

    /// CPU seconds the server used so far (all its threads).
    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.child.id()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// User plus system CPU seconds from a `/proc/.../stat` file (clock ticks of 10 ms).
fn cpu_seconds(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else { return f64::NAN };
    let Some((_, rest)) = stat.rsplit_once(')') else { return f64::NAN };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command: state is field 3, utime 14, stime 15.
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    (ticks(14) + ticks(15)) as f64 / 100.0
}

/// Waits (at most `max`) for a second in which the machine was at least 90 % idle; returns
/// the idle share of the last second measured.
fn wait_quiet(max: Duration) -> f64 {
    fn sample() -> (u64, u64) {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let idle = cpu.get(3).copied().unwrap_or(0) + cpu.get(4).copied().unwrap_or(0);
        (idle, cpu.iter().sum())
    }
    let give_up = Instant::now() + max;
    loop {
        let (idle0, total0) = sample();
        thread::sleep(Duration::from_millis(1000));
        let (idle1, total1) = sample();
        let idle = (idle1 - idle0) as f64 / (total1 - total0).max(1) as f64;
        if idle >= 0.9 || Instant::now() >= give_up {
            return idle;
        }
    }
}

fn machine_state(s: &Settings) -> String {
    let version = |program: &Path, arg: &str| {
        find_program(program)
            .and_then(|p| Command::new(p).arg(arg).output().ok())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "missing".into())
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "compare: {cpus} CPUs, load average {}; {} records per throughput run, {} records at \
         {} records/s per latency run, {} runs each, data under {}\n\
         compare: mqd {} ({}); {}; {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        s.count,
        s.latency_count,
        s.rate,
        s.runs,
        s.dir.display(),
        version(&s.mqd, "--version"),
        s.mqd.display(),
        version(&s.nats, "--version"),
        version(&s.redis, "--version"),
    )
}

// ---------------------------------------------------------------------------------------
// The workload, common to every system

/// The publishing side of one system.
trait Publisher: Send {
    /// Queues one record; writes a batch when one is full (or at once when paced), and
    /// blocks while too many records await acknowledgement.
    fn send(&mut self, record: &[u8]) -> Result<()>;
    /// Writes what is queued and collects the acknowledgements that have arrived.
    fn poll(&mut self) -> Result<Acked>;
    /// Writes what is queued and waits for every acknowledgement.
    fn flush(&mut self) -> Result<Acked>;
}

/// Outcomes of published records since the last call.
#[derive(Debug, Default, Clone, Copy)]
struct Acked {
    ok: u64,
    failed: u64,
}

/// The subscribing side of one system.
trait Subscriber: Send {
    /// Waits up to [`POLL`] for records, hands each to `sink` and acknowledges them.
    fn recv(&mut self, sink: &mut Sink) -> Result<()>;
    /// Sends the last acknowledgements.
    fn close(&mut self) -> Result<()>;
}

/// Counters the threads share.
struct Shared {
    epoch: Instant,
    start: Instant,
    stop: AtomicBool,
    sent: AtomicU64,
    placed: AtomicU64,
    received: AtomicU64,
    expected: AtomicU64,
}

impl Shared {
    fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    fn lag(&self) -> u64 {
        self.sent.load(Ordering::Relaxed).saturating_sub(self.received.load(Ordering::Relaxed))
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Where a subscriber puts what it receives: latency, first deliveries, duplicates.
struct Sink {
    epoch: Instant,
    now_ns: u64,
    seen: Vec<u64>,
    latency_us: Histogram<u64>,
    unique: u64,
    duplicates: u64,
    foreign: u64,
    last: Option<Instant>,
}

impl Sink {
    /// Reads the clock: called once per read from the socket, as `mq-bench` does once per
    /// poll.
    fn clock(&mut self) {
        let now = Instant::now();
        self.now_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        self.last = Some(now);
    }

    fn record(&mut self, value: &[u8]) {
        let Some(header) = value.get(..HEADER_BYTES) else {
            self.foreign += 1;
            return;
        };
        let send_ns = u64::from_be_bytes(header[..8].try_into().expect("8 bytes"));
        let seq = u32::from_be_bytes(header[12..16].try_into().expect("4 bytes")) as usize;
        let (word, bit) = (seq / 64, seq % 64);
        let Some(w) = self.seen.get_mut(word) else {
            self.foreign += 1;
            return;
        };
        if *w & (1 << bit) == 0 {
            *w |= 1 << bit;
            self.unique += 1;
            self.latency_us.saturating_record((self.now_ns.saturating_sub(send_ns) / 1000).max(1));
        } else {
            self.duplicates += 1;
        }
    }
}

/// What a publisher thread did.
struct Published {
    acked: Acked,
    finished: Instant,
    late_us: Histogram<u64>,
}

fn publish(
    p: &mut dyn Publisher,
    count: u64,
    rate: Option<f64>,
    shared: &Shared,
) -> Result<Published> {
    let mut payload = vec![0x5a_u8; SIZE];
    let mut late_us = new_histogram();
    let mut acked = Acked::default();
    let add = |a: Acked, acked: &mut Acked| {
        acked.ok += a.ok;
        acked.failed += a.failed;
        shared.placed.fetch_add(a.ok, Ordering::Relaxed);
    };
    let interval = rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let mut stamp = shared.start;
    for seq in 0..count {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        stamp = match interval {
            Some(every) => {
                // Stamped with the time the record was due: a late sender counts against the
                // latency (no coordinated omission). No spinning: on two cores a spinning
                // sender takes the CPU the server needs.
                let due = shared.start + every.mul_f64(seq as f64);
                let now = Instant::now();
                if due > now {
                    thread::sleep(due - now);
                }
                late_us.saturating_record(Instant::now().duration_since(due).as_micros().max(1) as u64);
                due
            }
            None if seq % 16 == 0 => Instant::now(),
            None => stamp,
        };
        if seq % 256 == 0 {
            while shared.lag() > MAX_LAG && !shared.stop.load(Ordering::Relaxed) {
                add(p.poll()?, &mut acked);
                thread::sleep(Duration::from_micros(200));
            }
        }
        payload[0..8].copy_from_slice(&shared.nanos(stamp).to_be_bytes());
        payload[8..12].copy_from_slice(&0u32.to_be_bytes());
        payload[12..16].copy_from_slice(&(seq as u32).to_be_bytes());
        p.send(&payload)?;
        shared.sent.fetch_add(1, Ordering::Relaxed);
        // Paced, acknowledgements are collected after every record (a non-blocking read),
        // so that what awaits them stays small; under load every 1,024 records.
        if interval.is_some() || (seq + 1) % 1024 == 0 {
            add(p.poll()?, &mut acked);
        }
    }
    add(p.flush()?, &mut acked);
    Ok(Published { acked, finished: Instant::now(), late_us })
}

fn subscribe(s: &mut dyn Subscriber, count: u64, shared: &Shared) -> Result<Sink> {
    let mut sink = Sink {
        epoch: shared.epoch,
        now_ns: 0,
        seen: vec![0; count as usize / 64 + 1],
        latency_us: new_histogram(),
        unique: 0,
        duplicates: 0,
        foreign: 0,
        last: None,
    };
    let mut last_new = None;
    while !shared.stop.load(Ordering::Relaxed)
        && shared.received.load(Ordering::Relaxed) < shared.expected.load(Ordering::Relaxed)
    {
        let before = sink.unique;
        s.recv(&mut sink)?;
        if sink.unique > before {
            shared.received.fetch_add(sink.unique - before, Ordering::Relaxed);
            last_new = sink.last;
        }
    }
    s.close()?;
    sink.last = last_new;
    Ok(sink)
}

/// What one run measured.
struct RunResult {
    case: Case,
    mode: Mode,
    run: usize,
    error: Option<String>,
    records: u64,
    failed: u64,
    publish_s: f64,
    e2e_s: f64,
    latency_us: Histogram<u64>,
    late_us: Histogram<u64>,
    duplicates: u64,
    missing: u64,
    server_cpu_s: f64,
    bench_cpu_s: f64,
    idle_before: f64,
}

impl RunResult {
    fn failed(case: Case, mode: Mode, run: usize, idle: f64, error: String) -> RunResult {
        RunResult {
            case,
            mode,
            run,
            error: Some(error),
            records: 0,
            failed: 0,
            publish_s: f64::NAN,
            e2e_s: f64::NAN,
            latency_us: new_histogram(),
            late_us: new_histogram(),
            duplicates: 0,
            missing: 0,
            server_cpu_s: f64::NAN,
            bench_cpu_s: f64::NAN,
            idle_before: idle,
        }
    }

    fn ok(&self) -> bool {
        self.error.is_none() && self.records > 0
    }

    fn e2e_rate(&self) -> f64 {
        (self.records - self.missing) as f64 / self.e2e_s
    }

    fn publish_rate(&self) -> f64 {
        self.records as f64 / self.publish_s
    }

    fn q(&self, q: f64) -> u64 {
        self.latency_us.value_at_quantile(q)
    }

    fn line(&self) -> String {
        if let Some(e) = &self.error {
            return format!(
                "{:<22} {:<10} run {}: FAILED: {e}",
                self.case.name(),
                self.mode.name(),
                self.run
            );
        }
        format!(
            "{:<22} {:<10} run {}: e2e {:>9.0}/s publish {:>9.0}/s  latency µs p50 {} p99 {} p99.9 {} max {}  \
             late p99 {}  dup {} missing {} failed {}  cpu server {:.2}s bench {:.2}s  idle before {:.0}%",
            self.case.name(),
            self.mode.name(),
            self.run,
            self.e2e_rate(),
            self.publish_rate(),
            self.q(0.5),
            self.q(0.99),
            self.q(0.999),
            self.latency_us.max(),
            self.late_us.value_at_quantile(0.99),
            self.duplicates,
            self.missing,
            self.failed,
            self.server_cpu_s,
            self.bench_cpu_s,
            self.idle_before * 100.0,
        )
    }

    fn json(&self) -> serde_json::Value {
        let finite = |x: f64| x.is_finite().then_some(x);
        json!({
            "case": self.case.name(),
            "mode": self.mode.name(),
            "run": self.run,
            "error": self.error,
            "guarantee": self.case.guarantee(),
            "size": SIZE,
            "records": self.records,
            "failed": self.failed,
            "duplicates": self.duplicates,
            "missing": self.missing,
            "publish_seconds": finite(self.publish_s),
            "publish_records_per_s": finite(self.publish_rate()),
            "e2e_seconds": finite(self.e2e_s),
            "e2e_records_per_s": finite(self.e2e_rate()),
            "latency_us": {
                "p50": self.q(0.5), "p90": self.q(0.9), "p99": self.q(0.99),
                "p999": self.q(0.999), "max": self.latency_us.max(),
            },
            "sender_late_us": (!self.late_us.is_empty()).then(|| json!({
                "p50": self.late_us.value_at_quantile(0.5),
                "p99": self.late_us.value_at_quantile(0.99),
                "max": self.late_us.max(),
            })),
            "server_cpu_seconds": finite(self.server_cpu_s),
            "bench_cpu_seconds": finite(self.bench_cpu_s),
            "idle_before": self.idle_before,
        })
    }
}

fn run_case(case: Case, mode: Mode, run: usize, s: &Settings) -> Result<RunResult> {
    let server = Server::start(case, s)?;
    let paced = mode == Mode::Latency;
    let (count, rate) = if paced { (s.latency_count, Some(s.rate)) } else { (s.count, None) };
    let (mut publisher, mut subscriber) = connect(case, server.port, paced, s)?;
    // Warm-up on the same connections, not measured: every server starts fresh and first
    // grows its memory and files.
    let warmup = if paced { s.warmup_latency } else { s.warmup };
    if warmup > 0 {
        let (published, sink, _) = workload(&mut *publisher, &mut *subscriber, warmup, rate)?;
        if published.acked.ok != sink.unique {
            return Err(format!(
                "warm-up: {} records acknowledged, {} received",
                published.acked.ok, sink.unique
            )
            .into());
        }
    }
    let (server_cpu0, bench_cpu0) = (server.cpu_seconds(), cpu_seconds("/proc/self/stat"));
    let (published, sink, start) = workload(&mut *publisher, &mut *subscriber, count, rate)?;
    let (server_cpu, bench_cpu) =
        (server.cpu_seconds() - server_cpu0, cpu_seconds("/proc/self/stat") - bench_cpu0);
    drop((publisher, subscriber));
    drop(server);
    let records = published.acked.ok;
    Ok(RunResult {
        case,
        mode,
        run,
        error: None,
        records,
        failed: published.acked.failed,
        publish_s: published.finished.duration_since(start).as_secs_f64(),
        e2e_s: sink.last.unwrap_or(start).duration_since(start).as_secs_f64(),
        duplicates: sink.duplicates,
        missing: records.saturating_sub(sink.unique),
        latency_us: sink.latency_us,
        late_us: published.late_us,
        server_cpu_s: server_cpu,
        bench_cpu_s: bench_cpu,
        idle_before: 0.0,
    })
}

/// One publisher thread and one subscriber thread until the subscriber has every record
/// the server acknowledged, or [`TIMEOUT`] after publishing ended. Returns what each
/// measured and when publishing started.
fn workload(
    publisher: &mut dyn Publisher,
    subscriber: &mut dyn Subscriber,
    count: u64,
    rate: Option<f64>,
) -> Result<(Published, Sink, Instant)> {
    let epoch = Instant::now();
    let shared = Shared {
        epoch,
        start: Instant::now(),
        stop: AtomicBool::new(false),
        sent: AtomicU64::new(0),
        placed: AtomicU64::new(0),
        received: AtomicU64::new(0),
        expected: AtomicU64::new(u64::MAX),
    };
    let (published, sink) = thread::scope(|scope| {
        let sub = thread::Builder::new()
            .name("sub".into())
            .spawn_scoped(scope, || subscribe(subscriber, count, &shared))
            .expect("thread starts");
        let publ = thread::Builder::new()
            .name("pub".into())
            .spawn_scoped(scope, || publish(publisher, count, rate, &shared))
            .expect("thread starts");
        let mut give_up = None;
        loop {
            thread::sleep(Duration::from_millis(5));
            let now = Instant::now();
            if publ.is_finished() && give_up.is_none() {
                // Every record the server took is expected at the subscriber (for NATS core,
                // every record written, as there are no acks).
                shared.expected.store(shared.placed.load(Ordering::Relaxed), Ordering::Relaxed);
                give_up = Some(now + TIMEOUT);
            }
            if sub.is_finished() && publ.is_finished() {
                break;
            }
            if sub.is_finished() || give_up.is_some_and(|t| now >= t) {
                shared.stop.store(true, Ordering::Relaxed);
            }
        }
        (publ.join().expect("publisher thread"), sub.join().expect("subscriber thread"))
    });
    Ok((published?, sink?, shared.start))
}

type Pair = (Box<dyn Publisher>, Box<dyn Subscriber>);

fn connect(case: Case, port: u16, paced: bool, s: &Settings) -> Result<Pair> {
    match case {
        Case::MqdMemory | Case::MqdMemoryThpOff | Case::MqdAlways | Case::MqdInterval => {
            mqd::connect(port, paced)
        }
        Case::NatsCore => nats::connect_core(port, paced),
        Case::NatsJetStream => nats::connect_jetstream(port, paced, s.js_ack_explicit),
        Case::RedisAlways | Case::RedisEverysec => redis_streams::connect(port, paced),
    }
}

// ---------------------------------------------------------------------------------------
// Summary

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let digits = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn nanos(ns: f64) -> String {
    if ns.is_finite() {
        format!("{} ns", thousands(ns))
    } else {
        "-".into()
    }
}

fn micros(us: f64) -> String {
    if !us.is_finite() {
        "-".into()
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn summarize(cases: &[Case], s: &Settings, results: &[RunResult]) {
    let runs = |case: Case, mode: Mode| -> Vec<&RunResult> {
        results.iter().filter(|r| r.case == case && r.mode == mode).collect()
    };
    let joined = |v: &[&RunResult], f: &dyn Fn(&RunResult) -> String| {
        v.iter()
            .map(|r| if r.ok() { f(r) } else { "failed".into() })
            .collect::<Vec<_>>()
            .join(" / ")
    };
    for &mode in &s.modes {
        println!();
        match mode {
            Mode::Throughput => {
                println!(
                    "Throughput: {} records of {SIZE} bytes, medians of {} runs",
                    s.count, s.runs
                );
                println!();
                println!("| case | an acknowledged publish means | end to end, median | runs | publish, median | server CPU per record | missing / dup |");
                println!("|---|---|---:|---|---:|---:|---|");
            }
            Mode::Latency => {
                println!(
                    "Latency at {} records/s: {} records, medians of {} runs",
                    s.rate, s.latency_count, s.runs
                );
                println!();
                println!(
                    "| case | p50 | p90 | p99 | p99.9 | max | p99 of each run | sender late p99 |"
                );
                println!("|---|---:|---:|---:|---:|---:|---|---:|");
            }
        }
        for &case in cases {
            let all = runs(case, mode);
            let good: Vec<&RunResult> = all.iter().copied().filter(|r| r.ok()).collect();
            let med = |f: &dyn Fn(&RunResult) -> f64| median(good.iter().map(|r| f(r)).collect());
            let missing: u64 = all.iter().map(|r| r.missing).sum();
            let dup: u64 = all.iter().map(|r| r.duplicates).sum();
            let summary = json!({
                "summary": true,
                "case": case.name(),
                "mode": mode.name(),
                "runs": all.len(),
                "runs_ok": good.len(),
                "e2e_records_per_s": med(&|r| r.e2e_rate()),
                "publish_records_per_s": med(&|r| r.publish_rate()),
                "latency_us": {
                    "p50": med(&|r| r.q(0.5) as f64), "p90": med(&|r| r.q(0.9) as f64),
                    "p99": med(&|r| r.q(0.99) as f64), "p999": med(&|r| r.q(0.999) as f64),
                    "max": med(&|r| r.latency_us.max() as f64),
                },
                "server_cpu_ns_per_record": med(&|r| r.server_cpu_s * 1e9 / r.records as f64),
                "bench_cpu_ns_per_record": med(&|r| r.bench_cpu_s * 1e9 / r.records as f64),
                "missing": missing,
                "duplicates": dup,
            });
            match mode {
                Mode::Throughput => println!(
                    "| {} | {} | {} | {} | {} | {} | {missing} / {dup} |",
                    case.name(),
                    case.guarantee(),
                    thousands(med(&|r| r.e2e_rate())),
                    joined(&all, &|r| thousands(r.e2e_rate())),
                    thousands(med(&|r| r.publish_rate())),
                    nanos(med(&|r| r.server_cpu_s * 1e9 / r.records as f64)),
                ),
                Mode::Latency => println!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    case.name(),
                    micros(med(&|r| r.q(0.5) as f64)),
                    micros(med(&|r| r.q(0.9) as f64)),
                    micros(med(&|r| r.q(0.99) as f64)),
                    micros(med(&|r| r.q(0.999) as f64)),
                    micros(med(&|r| r.latency_us.max() as f64)),
                    joined(&all, &|r| micros(r.q(0.99) as f64)),
                    micros(med(&|r| r.late_us.value_at_quantile(0.99) as f64)),
                ),
            }
            eprintln!("{summary}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// mqd: our own client, configured as mq-bench does

mod mqd {
    use super::*;

    pub fn connect(port: u16, paced: bool) -> Result<Pair> {
        let client = Client::connect(&[format!("127.0.0.1:{port}")], ClientConfig::default())?;
        let config = ConsumerConfig {
            start: mq_client::StartPosition::Latest,
            credit: CREDIT as u32,
            ack_batch: 0,
            ephemeral: false,
        };
        let consumer = client.subscribe("bench", "compare", config)?;
        let producer = client.producer(ProducerConfig {
            batch_records: BATCH,
            batch_bytes: 256 * 1024,
            linger: if paced { Duration::ZERO } else { Duration::from_millis(1) },
            max_in_flight_batches: if paced { IN_FLIGHT_RECORDS } else { IN_FLIGHT_BATCHES },
        })?;
        Ok((Box::new(Pub(producer)), Box::new(Sub(consumer))))
    }

    struct Pub(Producer);

    fn count(outcomes: Vec<mq_client::Outcome>) -> Acked {
        let ok = outcomes.iter().filter(|o| o.result.is_ok()).count() as u64;
        Acked { ok, failed: outcomes.len() as u64 - ok }
    }

    impl Publisher for Pub {
        fn send(&mut self, record: &[u8]) -> Result<()> {
            self.0.send("bench", None, record)?;
            Ok(())
        }

        fn poll(&mut self) -> Result<Acked> {
            Ok(count(self.0.poll()?))
        }

        fn flush(&mut self) -> Result<Acked> {
            Ok(count(self.0.flush()?))
        }
    }

    struct Sub(Consumer);

    impl Subscriber for Sub {
        fn recv(&mut self, sink: &mut Sink) -> Result<()> {
            let messages = self.0.poll(POLL)?;
            if messages.is_empty() {
                return Ok(());
            }
            sink.clock();
            for m in &messages {
                sink.record(&m.value);
                self.0.ack(m)?;
            }
            Ok(())
        }

        fn close(&mut self) -> Result<()> {
            Ok(self.0.commit()?)
        }
    }
}

// ---------------------------------------------------------------------------------------
// NATS: the text protocol over a TcpStream

mod nats {
    use super::*;

    /// Subscription ids.
    const SID_CORE: u64 = 1;
    const SID_PULL: u64 = 2;
    const SID_PUBACK: u64 = 3;
    const SID_CONTROL: u64 = 9;
    const PULL_BATCH: u64 = 4096;

    /// One thing the server sent.
    pub enum Event<'a> {
        Msg { sid: u64, reply: Option<&'a [u8]>, payload: &'a [u8], status: Option<u16> },
        Ping,
        Pong,
        Err(&'a [u8]),
        Other,
    }

    /// Bytes read and not yet parsed.
    pub struct ReadBuf {
        buf: Vec<u8>,
        start: usize,
        end: usize,
    }

    fn number(s: &[u8]) -> Result<u64> {
        std::str::from_utf8(s)?.parse().map_err(|e| format!("bad number {s:?}: {e}").into())
    }

    impl ReadBuf {
        fn new() -> ReadBuf {
            ReadBuf { buf: vec![0; 1 << 20], start: 0, end: 0 }
        }

        /// Reads once; blocking (up to the socket's read timeout) or not. Returns the bytes
        /// read, 0 when there were none.
        fn fill(&mut self, stream: &TcpStream, wait: bool) -> Result<usize> {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < 64 * 1024 {
                let len = self.buf.len() * 2;
                self.buf.resize(len, 0);
            }
            let free = &mut self.buf[self.end..];
            let n = if wait {
                match (&*stream).read(free) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        return Ok(0)
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                match rustix::net::recv(stream, free, rustix::net::RecvFlags::DONTWAIT) {
                    Ok((n, _)) => n,
                    Err(rustix::io::Errno::AGAIN) => return Ok(0),
                    Err(e) => return Err(io::Error::from(e).into()),
                }
            };
            if n == 0 {
                return Err("the NATS server closed the connection".into());
            }
            self.end += n;
            Ok(n)
        }

        /// The next complete thing in the buffer, if any.
        fn next(&mut self) -> Result<Option<Event<'_>>> {
            let data = &self.buf[self.start..self.end];
            let Some(nl) = data.iter().position(|&b| b == b'\n') else { return Ok(None) };
            let line = data[..nl].strip_suffix(b"\r").unwrap_or(&data[..nl]);
            let mut args = [&b""[..]; 6];
            let mut n = 0;
            for part in line.split(|&b| b == b' ' || b == b'\t').filter(|p| !p.is_empty()) {
                if n < args.len() {
                    args[n] = part;
                }
                n += 1;
            }
            let base = self.start;
            let body = base + nl + 1;
            let verb = args[0];
            if verb.eq_ignore_ascii_case(b"MSG") || verb.eq_ignore_ascii_case(b"HMSG") {
                let headers = verb.len() == 4;
                let (fixed, max) = if headers { (5, 6) } else { (4, 5) };
                if n < fixed || n > max {
                    return Err(format!("bad line {:?}", String::from_utf8_lossy(line)).into());
                }
                let sid = number(args[2])?;
                let has_reply = n == max;
                let total = number(args[n - 1])? as usize;
                let header_len = if headers { number(args[n - 2])? as usize } else { 0 };
                if self.end < body + total + 2 {
                    return Ok(None);
                }
                let reply_range = has_reply.then(|| {
                    let r = args[3];
                    let at = r.as_ptr() as usize - self.buf.as_ptr() as usize;
                    at..at + r.len()
                });
                self.start = body + total + 2;
                let status = if headers {
                    // "NATS/1.0 408 Request Timeout\r\n..." carries a status code.
                    let h = &self.buf[body..body + header_len];
                    let first = h.split(|&b| b == b'\r').next().unwrap_or_default();
                    first
                        .split(|&b| b == b' ')
                        .nth(1)
                        .and_then(|c| number(c).ok())
                        .map(|c| c as u16)
                } else {
                    None
                };
                let reply = reply_range.map(|r| &self.buf[r]);
                let payload = &self.buf[body + header_len..body + total];
                return Ok(Some(Event::Msg { sid, reply, payload, status }));
            }
            self.start = body;
            let line = &self.buf[base..base + nl];
            Ok(Some(if verb.eq_ignore_ascii_case(b"PING") {
                Event::Ping
            } else if verb.eq_ignore_ascii_case(b"PONG") {
                Event::Pong
            } else if verb.eq_ignore_ascii_case(b"-ERR") {
                Event::Err(line)
            } else {
                Event::Other // INFO, +OK
            }))
        }
    }

    /// A connection: the socket, what was read, what is to be written.
    pub struct Conn {
        stream: TcpStream,
        rd: ReadBuf,
        wbuf: Vec<u8>,
    }

    impl Conn {
        fn connect(port: u16) -> Result<Conn> {
            let stream = TcpStream::connect(("127.0.0.1", port))?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(POLL))?;
            let mut conn =
                Conn { stream, rd: ReadBuf::new(), wbuf: Vec::with_capacity(512 * 1024) };
            conn.wbuf.extend_from_slice(
                b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,\
                  \"protocol\":1,\"lang\":\"rust-compare-bench\",\"version\":\"0\"}\r\n",
            );
            conn.ping()?;
            Ok(conn)
        }

        fn write_out(&mut self) -> Result<()> {
            if !self.wbuf.is_empty() {
                self.stream.write_all(&self.wbuf)?;
                self.wbuf.clear();
            }
            Ok(())
        }

        /// Round trip: everything written before was processed by the server.
        fn ping(&mut self) -> Result<()> {
            self.wbuf.extend_from_slice(b"PING\r\n");
            self.write_out()?;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                while let Some(event) = self.rd.next()? {
                    match event {
                        Event::Pong => return Ok(()),
                        Event::Ping => self.wbuf.extend_from_slice(b"PONG\r\n"),
                        Event::Err(e) => {
                            return Err(String::from_utf8_lossy(e).into_owned().into())
                        }
                        _ => {}
                    }
                }
                if Instant::now() > deadline {
                    return Err("no PONG from the NATS server".into());
                }
                self.write_out()?;
                self.rd.fill(&self.stream, true)?;
            }
        }

        fn sub(&mut self, subject: &str, sid: u64) {
            self.wbuf.extend_from_slice(format!("SUB {subject} {sid}\r\n").as_bytes());
        }

        fn publish(&mut self, subject: &[u8], reply: Option<&[u8]>, payload: &[u8]) {
            put_pub(&mut self.wbuf, subject, reply, payload);
        }
        /// A JetStream API request and its JSON reply (retried while JetStream is not up).
        fn request(&mut self, subject: &str, body: &str) -> Result<serde_json::Value> {
            let deadline = Instant::now() + Duration::from_secs(10);
            'again: loop {
                self.publish(subject.as_bytes(), Some(b"_INBOX.compare.control"), body.as_bytes());
                self.write_out()?;
                loop {
                    while let Some(event) = self.rd.next()? {
                        match event {
                            Event::Msg { sid: SID_CONTROL, status: Some(503), .. }
                                if Instant::now() < deadline =>
                            {
                                thread::sleep(Duration::from_millis(100));
                                continue 'again;
                            }
                            Event::Msg { sid: SID_CONTROL, payload, .. } => {
                                let reply: serde_json::Value = serde_json::from_slice(payload)?;
                                if let Some(error) = reply.get("error") {
                                    return Err(format!("{subject}: {error}").into());
                                }
                                return Ok(reply);
                            }
                            Event::Ping => self.wbuf.extend_from_slice(b"PONG\r\n"),
                            Event::Err(e) => {
                                return Err(String::from_utf8_lossy(e).into_owned().into())
                            }
                            _ => {}
                        }
                    }
                    if Instant::now() > deadline {
                        return Err(format!("{subject}: no reply").into());
                    }
                    self.write_out()?;
                    self.rd.fill(&self.stream, true)?;
                }
            }
        }
    }

    /// `PUB <subject> [<reply>] <bytes>\r\n<payload>\r\n`.
    fn put_pub(w: &mut Vec<u8>, subject: &[u8], reply: Option<&[u8]>, payload: &[u8]) {
        w.extend_from_slice(b"PUB ");
        w.extend_from_slice(subject);
        if let Some(reply) = reply {
            w.push(b' ');
            w.extend_from_slice(reply);
        }
        w.push(b' ');
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut len = payload.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (len % 10) as u8;
            len /= 10;
            if len == 0 {
                break;
            }
        }
        w.extend_from_slice(&digits[i..]);
        w.extend_from_slice(b"\r\n");
        w.extend_from_slice(payload);
        w.extend_from_slice(b"\r\n");
    }

    pub fn connect_core(port: u16, paced: bool) -> Result<Pair> {
        let mut sub = Conn::connect(port)?;
        sub.sub("bench", SID_CORE);
        sub.ping()?; // the subscription is in place before the first publish
        let publisher = Pub {
            conn: Conn::connect(port)?,
            paced,
            jetstream: false,
            queued: 0,
            unacked: 0,
            sent: 0,
            acked: Acked::default(),
        };
        let subscriber = Sub { conn: sub, jetstream: None };
        Ok((Box::new(publisher), Box::new(subscriber)))
    }

    pub fn connect_jetstream(port: u16, paced: bool, explicit: bool) -> Result<Pair> {
        let mut sub = Conn::connect(port)?;
        sub.sub("_INBOX.compare.control", SID_CONTROL);
        let stream = json!({
            "name": "BENCH", "subjects": ["bench"], "storage": "file",
            "retention": "limits", "discard": "old", "num_replicas": 1,
        });
        sub.request("$JS.API.STREAM.CREATE.BENCH", &stream.to_string())?;
        let consumer = json!({
            "stream_name": "BENCH",
            "config": {
                "durable_name": "compare",
                "deliver_policy": "all",
                "ack_policy": if explicit { "explicit" } else { "all" },
                "ack_wait": 30_000_000_000u64,
                "max_ack_pending": 2 * CREDIT,
                "replay_policy": "instant",
            },
        });
        sub.request("$JS.API.CONSUMER.DURABLE.CREATE.BENCH.compare", &consumer.to_string())?;
        sub.sub("_INBOX.compare.pull", SID_PULL);
        let mut pubc = Conn::connect(port)?;
        pubc.sub("_INBOX.compare.puback", SID_PUBACK);
        pubc.ping()?;
        let js = JetStreamSub { explicit, requested: 0, delivered: 0 };
        let mut subscriber = Sub { conn: sub, jetstream: Some(js) };
        subscriber.pull()?;
        subscriber.conn.ping()?;
        let publisher = Pub {
            conn: pubc,
            paced,
            jetstream: true,
            queued: 0,
            unacked: 0,
            sent: 0,
            acked: Acked::default(),
        };
        Ok((Box::new(publisher), Box::new(subscriber)))
    }

    struct Pub {
        conn: Conn,
        paced: bool,
        jetstream: bool,
        queued: usize,
        unacked: u64,
        sent: u64,
        acked: Acked,
    }

    impl Pub {
        fn write_out(&mut self) -> Result<()> {
            self.queued = 0;
            self.conn.write_out()
        }

        /// Counts the PubAcks in the buffer.
        fn drain(&mut self) -> Result<()> {
            while let Some(event) = self.conn.rd.next()? {
                match event {
                    Event::Msg { sid: SID_PUBACK, payload, .. } => {
                        if payload.windows(7).any(|w| w == b"\"error\"") {
                            self.acked.failed += 1;
                        } else {
                            self.acked.ok += 1;
                        }
                        self.unacked -= 1;
                    }
                    Event::Ping => self.conn.wbuf.extend_from_slice(b"PONG\r\n"),
                    Event::Err(e) => return Err(String::from_utf8_lossy(e).into_owned().into()),
                    _ => {}
                }
            }
            Ok(())
        }
    }

    const IN_FLIGHT_MAX: u64 = IN_FLIGHT_RECORDS as u64;

    impl Publisher for Pub {
        fn send(&mut self, record: &[u8]) -> Result<()> {
            let reply = self.jetstream.then_some(&b"_INBOX.compare.puback"[..]);
            self.conn.publish(b"bench", reply, record);
            self.queued += 1;
            self.sent += 1;
            if self.jetstream {
                self.unacked += 1;
            }
            if self.paced || self.queued >= BATCH {
                self.write_out()?;
            }
            if self.unacked > IN_FLIGHT_MAX {
                self.write_out()?;
                while self.unacked > IN_FLIGHT_MAX {
                    self.conn.rd.fill(&self.conn.stream, true)?;
                    self.drain()?;
                }
            }
            Ok(())
        }

        fn poll(&mut self) -> Result<Acked> {
            self.write_out()?;
            if self.jetstream {
                while self.conn.rd.fill(&self.conn.stream, false)? > 0 {}
                self.drain()?;
            }
            Ok(std::mem::take(&mut self.acked))
        }

        fn flush(&mut self) -> Result<Acked> {
            self.write_out()?;
            if self.jetstream {
                let deadline = Instant::now() + TIMEOUT;
                while self.unacked > 0 && Instant::now() < deadline {
                    self.conn.rd.fill(&self.conn.stream, true)?;
                    self.drain()?;
                }
                self.acked.failed += self.unacked;
            } else {
                // No acks in core NATS: once the server answered a PING, it has processed
                // every record before it; count those as placed.
                self.conn.ping()?;
                self.acked.ok += std::mem::take(&mut self.sent);
            }
            Ok(std::mem::take(&mut self.acked))
        }
    }

    struct JetStreamSub {
        explicit: bool,
        requested: u64,
        delivered: u64,
    }

    struct Sub {
        conn: Conn,
        jetstream: Option<JetStreamSub>,
    }

    impl Sub {
        /// Keeps at most [`CREDIT`] messages requested and not yet delivered, in pull
        /// requests of [`PULL_BATCH`].
        fn pull(&mut self) -> Result<()> {
            let Some(js) = &mut self.jetstream else { return Ok(()) };
            while js.requested - js.delivered + PULL_BATCH <= CREDIT {
                let body = format!("{{\"batch\":{PULL_BATCH}}}");
                self.conn.publish(
                    b"$JS.API.CONSUMER.MSG.NEXT.BENCH.compare",
                    Some(b"_INBOX.compare.pull"),
                    body.as_bytes(),
                );
                js.requested += PULL_BATCH;
            }
            Ok(())
        }
    }

    impl Subscriber for Sub {
        fn recv(&mut self, sink: &mut Sink) -> Result<()> {
            if self.conn.rd.fill(&self.conn.stream, true)? == 0 {
                return Ok(());
            }
            sink.clock();
            let mut last_reply: Option<std::ops::Range<usize>> = None;
            let explicit = self.jetstream.as_ref().is_some_and(|js| js.explicit);
            let mut delivered = 0;
            // The buffer does not move while the complete messages in it are parsed.
            let buf_at = self.conn.rd.buf.as_ptr() as usize;
            while let Some(event) = self.conn.rd.next()? {
                match event {
                    Event::Msg {
                        sid: SID_CORE | SID_PULL, status: None, payload, reply, ..
                    } => {
                        sink.record(payload);
                        delivered += 1;
                        if let Some(reply) = reply {
                            if explicit {
                                put_pub(&mut self.conn.wbuf, reply, None, b"");
                            } else {
                                let at = reply.as_ptr() as usize - buf_at;
                                last_reply = Some(at..at + reply.len());
                            }
                        }
                    }
                    Event::Msg { status: Some(code), .. } => {
                        return Err(format!("JetStream pull status {code}").into());
                    }
                    Event::Ping => self.conn.wbuf.extend_from_slice(b"PONG\r\n"),
                    Event::Err(e) => return Err(String::from_utf8_lossy(e).into_owned().into()),
                    _ => {}
                }
            }
            if let Some(r) = last_reply {
                // AckAll: acknowledging the last message acknowledges every one before it.
                let reply = self.conn.rd.buf[r].to_vec();
                self.conn.publish(&reply, None, b"");
            }
            if let Some(js) = &mut self.jetstream {
                js.delivered += delivered;
            }
            self.pull()?;
            self.conn.write_out()
        }

        fn close(&mut self) -> Result<()> {
            self.conn.write_out()?;
            self.conn.ping()
        }
    }
}

// ---------------------------------------------------------------------------------------
// Redis Streams: the redis crate's connection and parser, commands packed by hand

mod redis_streams {
    use super::*;
    use redis::Value;

    fn open(port: u16) -> Result<redis::Connection> {
        use redis::IntoConnectionInfo;
        let info = redis::ConnectionAddr::Tcp("127.0.0.1".into(), port)
            .into_connection_info()?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        Ok(redis::Client::open(info)?.get_connection()?)
    }

    /// RESP: an array of `args.len()` bulk strings.
    fn pack_header(out: &mut Vec<u8>, args: usize) {
        out.extend_from_slice(format!("*{args}\r\n").as_bytes());
    }

    fn pack_arg(out: &mut Vec<u8>, arg: &[u8]) {
        out.push(b'$');
        out.extend_from_slice(arg.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }

    pub fn connect(port: u16, paced: bool) -> Result<Pair> {
        let mut sub = open(port)?;
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("bench")
            .arg("g")
            .arg("$")
            .arg("MKSTREAM")
            .query::<()>(&mut sub)?;
        let read = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("c")
            .arg("COUNT")
            .arg(2048)
            .arg("BLOCK")
            .arg(POLL.as_millis() as u64)
            .arg("STREAMS")
            .arg("bench")
            .arg(">")
            .get_packed_command();
        let mut xadd_prefix = Vec::new();
        pack_header(&mut xadd_prefix, 5);
        for arg in [&b"XADD"[..], b"bench", b"*", b"d"] {
            pack_arg(&mut xadd_prefix, arg);
        }
        let publisher = Pub {
            con: open(port)?,
            paced,
            xadd_prefix,
            in_flight_max: if paced { IN_FLIGHT_RECORDS } else { IN_FLIGHT_BATCHES },
            buf: Vec::with_capacity(512 * 1024),
            queued: 0,
            in_flight: VecDeque::new(),
            acked: Acked::default(),
        };
        let subscriber = Sub { con: sub, read, ids: Vec::new(), buf: Vec::new() };
        Ok((Box::new(publisher), Box::new(subscriber)))
    }

    struct Pub {
        con: redis::Connection,
        paced: bool,
        xadd_prefix: Vec<u8>,
        /// Most pipelines written and not yet answered.
        in_flight_max: usize,
        buf: Vec<u8>,
        queued: usize,
        /// Commands in each pipeline written and not yet answered.
        in_flight: VecDeque<usize>,
        acked: Acked,
    }

    impl Pub {
        fn write_out(&mut self) -> Result<()> {
            if self.queued > 0 {
                self.con.send_packed_command(&self.buf)?;
                self.in_flight.push_back(self.queued);
                self.buf.clear();
                self.queued = 0;
            }
            Ok(())
        }

        fn receive_one_pipeline(&mut self) -> Result<()> {
            let Some(n) = self.in_flight.pop_front() else { return Ok(()) };
            for _ in 0..n {
                match self.con.recv_response() {
                    Ok(_) => self.acked.ok += 1,
                    Err(e) if e.is_io_error() || e.is_connection_dropped() => return Err(e.into()),
                    Err(_) => self.acked.failed += 1,
                }
            }
            Ok(())
        }
    }

    impl Publisher for Pub {
        fn send(&mut self, record: &[u8]) -> Result<()> {
            self.buf.extend_from_slice(&self.xadd_prefix);
            pack_arg(&mut self.buf, record);
            self.queued += 1;
            if self.paced || self.queued >= BATCH {
                self.write_out()?;
            }
            while self.in_flight.len() > self.in_flight_max {
                self.receive_one_pipeline()?;
            }
            Ok(())
        }

        fn poll(&mut self) -> Result<Acked> {
            self.write_out()?;
            while self.in_flight.len() > self.in_flight_max {
                self.receive_one_pipeline()?;
            }
            Ok(std::mem::take(&mut self.acked))
        }

        fn flush(&mut self) -> Result<Acked> {
            self.write_out()?;
            while !self.in_flight.is_empty() {
                self.receive_one_pipeline()?;
            }
            Ok(std::mem::take(&mut self.acked))
        }
    }

    struct Sub {
        con: redis::Connection,
        read: Vec<u8>,
        /// Ids received and not yet acknowledged.
        ids: Vec<Vec<u8>>,
        buf: Vec<u8>,
    }

    impl Sub {
        /// Packs the `XACK` of every id received so far; true if there was any.
        fn pack_acks(&mut self) -> bool {
            self.buf.clear();
            if self.ids.is_empty() {
                return false;
            }
            pack_header(&mut self.buf, 3 + self.ids.len());
            for arg in [&b"XACK"[..], b"bench", b"g"] {
                pack_arg(&mut self.buf, arg);
            }
            for id in self.ids.drain(..) {
                pack_arg(&mut self.buf, &id);
            }
            true
        }
    }

    impl Subscriber for Sub {
        fn recv(&mut self, sink: &mut Sink) -> Result<()> {
            let acks = self.pack_acks();
            self.buf.extend_from_slice(&self.read);
            self.con.send_packed_command(&self.buf)?;
            if acks {
                self.con.recv_response()?;
            }
            let reply = self.con.recv_response()?;
            let Value::Array(streams) = reply else { return Ok(()) }; // Nil: BLOCK timed out
            sink.clock();
            for stream in streams {
                let Value::Array(mut key_entries) = stream else { continue };
                let Some(Value::Array(entries)) = key_entries.pop() else { continue };
                for entry in entries {
                    let Value::Array(mut id_fields) = entry else { continue };
                    let (Some(Value::Array(fields)), Some(Value::BulkString(id))) =
                        (id_fields.pop(), id_fields.pop())
                    else {
                        continue;
                    };
                    if let Some(Value::BulkString(value)) = fields.get(1) {
                        sink.record(value);
                    }
                    self.ids.push(id);
                }
            }
            Ok(())
        }

        fn close(&mut self) -> Result<()> {
            if self.pack_acks() {
                self.con.send_packed_command(&self.buf)?;
                self.con.recv_response()?;
            }
            Ok(())
        }
    }
}
