//! Jepsen-style at-least-once check with real processes (RELIABILITY case D9).
//!
//! A child `mqd --storage disk --fsync always --ack-timeout-ms 1000` serves 3 producer and
//! 3 consumer processes (one consumer group), each a `chaos_client`: the `mq-client` example
//! `client/examples/chaos_client.rs`, built by this test with `cargo build` (a no-op after
//! `cargo test --workspace`). Producers publish records with unique ids (each producer
//! process its own id range) and log every id the broker acknowledged with `PUBLISHED`;
//! consumers log every id they receive before they acknowledge it. While they run, at random
//! moments drawn from a seeded generator:
//!
//! - a consumer is stopped (SIGSTOP) for longer than the ack timeout, then continued: the
//!   broker closes it with `IDLE_TIMEOUT` and hands its records to the others, and the
//!   consumer subscribes again;
//! - a consumer is killed (SIGKILL) and a new one started;
//! - a producer is killed and a new one started (with a new id range);
//! - the broker is killed and restarted on the same data directory and port;
//! - the broker is stopped for up to 2 s, then continued.
//!
//! The first five events are one of each kind, in random order. Then producers are killed, the
//! consumers drain, and the test checks, from the logs: every id acknowledged to a producer was
//! received by some consumer (`lost = 0`); every id received was published by a producer and
//! its value is intact (`unexpected = 0`, `corrupt = 0`); duplicates (records received more
//! than once) are allowed and reported. Once everything is received the group's lag must reach
//! 0 (nothing stuck in flight). A broker or client process that exits on its own fails the test.
//!
//! `MQ_CHAOS_SECONDS` sets the length of the chaos phase (default 20, the CI size);
//! `MQ_CHAOS_SEED` replays a run's schedule (the seed is printed); `MQ_CHAOS_KEEP=1` keeps the
//! temporary directory (data, client logs and stderr) for a look afterwards. The long variant:
//! `MQ_CHAOS_SECONDS=600 cargo test -p mq-broker --test chaos -- --nocapture` (about 6M
//! records; the temporary directory grows to about 1 GB). Timeouts are generous (a slow machine makes the run longer, not red); nothing asserts how
//! fast anything happens.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use mq_protocol::{Request, Response};
use rustix::process::{kill_process, Pid, Signal};

const TOPIC: &str = "chaos";
const GROUP: &str = "chaos-group";
const PARTITIONS: u32 = 8;
const ACK_TIMEOUT_MS: u64 = 1000;
const PRODUCERS: usize = 3;
const CONSUMERS: usize = 3;
/// Producer process `n` (counting every one started) publishes ids from `n << 32` up.
const ID_RANGE_BITS: u32 = 32;

/// splitmix64: a small seeded generator (the broker's tests have no rand crate).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.below(high - low + 1))
    }
}

/// Builds the `chaos_client` example of `mq-client` and copies it into `dir` (so that another
/// build cannot replace it under the test). `--workspace` resolves features as
/// `cargo test --workspace` does, so after that the build is a no-op.
fn chaos_client_exe(dir: &Path) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new(env!("CARGO"))
        .args(["build", "--workspace", "--example", "chaos_client", "--message-format=json"])
        .current_dir(workspace)
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "building the chaos_client example failed");
    let built = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["target"]["name"] == "chaos_client")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo names the chaos_client executable");
    let exe = dir.join("chaos_client");
    std::fs::copy(&built, &exe).expect("copy chaos_client");
    exe
}

fn signal(child: &Child, sig: Signal) {
    // The process may be gone already (it is reaped by whoever killed it); nothing to do then.
    let _ = kill_process(Pid::from_child(child), sig);
}

/// Kills a child process and reaps it.
fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// One producer or consumer process.
struct ClientProc {
    name: String,
    child: Child,
    stderr: PathBuf,
    /// When a stopped process is to be continued.
    resume_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    StopConsumer,
    KillConsumer,
    KillProducer,
    KillBroker,
    StopBroker,
}

const EVENTS: [Event; 5] = [
    Event::StopConsumer,
    Event::KillConsumer,
    Event::KillProducer,
    Event::KillBroker,
    Event::StopBroker,
];

/// The broker, the clients and their logs; kills every process it started when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    exe: PathBuf,
    listen: String,
    mqd_args: Vec<String>,
    mqd: Option<Mqd>,
    broker_resume_at: Option<Instant>,
    producers: Vec<ClientProc>,
    consumers: Vec<ClientProc>,
    producers_started: u64,
    consumers_started: u64,
    producer_logs: Vec<PathBuf>,
    consumer_logs: Vec<PathBuf>,
    events: BTreeMap<String, u32>,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let exe = chaos_client_exe(dir.path());
        let data = dir.path().join("data");
        let mqd_args: Vec<String> = [
            "--storage",
            "disk",
            "--data-dir",
            data.to_str().unwrap(),
            "--fsync",
            "always",
            "--ack-timeout-ms",
            &ACK_TIMEOUT_MS.to_string(),
            // A record is dead-lettered after this many deliveries; chaos must not send
            // records there (they would be missing from the group).
            "--max-deliveries",
            "1000",
            "--partitions",
            &PARTITIONS.to_string(),
            "--segment-bytes",
            "2097152",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let args: Vec<&str> = mqd_args.iter().map(String::as_str).collect();
        let mqd = Mqd::try_spawn_at("127.0.0.1:0", &args).expect("mqd starts");
        let listen = mqd.addr.to_string();
        let mut admin = Bin::connect(mqd.addr);
        let reply = admin.call(&create(TOPIC, PARTITIONS));
        assert!(matches!(reply, Response::Ok), "CREATE_TOPIC: {reply:?}");
        let mut cluster = Cluster {
            dir,
            exe,
            listen,
            mqd_args,
            mqd: Some(mqd),
            broker_resume_at: None,
            producers: Vec::new(),
            consumers: Vec::new(),
            producers_started: 0,
            consumers_started: 0,
            producer_logs: Vec::new(),
            consumer_logs: Vec::new(),
            events: BTreeMap::new(),
        };
        for _ in 0..CONSUMERS {
            let c = cluster.spawn_consumer();
            cluster.consumers.push(c);
        }
        for _ in 0..PRODUCERS {
            let p = cluster.spawn_producer();
            cluster.producers.push(p);
        }
        cluster
    }

    fn spawn_client(&self, name: String, args: &[&str]) -> ClientProc {
        let stderr = self.dir.path().join(format!("{name}.stderr"));
        let child = Command::new(&self.exe)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .expect("chaos_client starts");
        ClientProc { name, child, stderr, resume_at: None }
    }

    fn spawn_producer(&mut self) -> ClientProc {
        let n = self.producers_started;
        self.producers_started += 1;
        let log = self.dir.path().join(format!("producer-{n}.log"));
        self.producer_logs.push(log.clone());
        let first = (n << ID_RANGE_BITS).to_string();
        let args = ["producer", &self.listen, TOPIC, &first, log.to_str().unwrap()];
        self.spawn_client(format!("producer-{n}"), &args)
    }

    fn spawn_consumer(&mut self) -> ClientProc {
        let n = self.consumers_started;
        self.consumers_started += 1;
        let log = self.dir.path().join(format!("consumer-{n}.log"));
        self.consumer_logs.push(log.clone());
        let args = ["consumer", &self.listen, TOPIC, GROUP, log.to_str().unwrap()];
        self.spawn_client(format!("consumer-{n}"), &args)
    }

    fn mqd(&mut self) -> &mut Mqd {
        self.mqd.as_mut().expect("the broker runs")
    }

    /// Restarts the broker on the same data directory and port (the port may take a moment
    /// to be free again).
    fn restart_broker(&mut self) {
        let args: Vec<&str> = self.mqd_args.iter().map(String::as_str).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match Mqd::try_spawn_at(&self.listen, &args) {
                Ok(mqd) => {
                    self.mqd = Some(mqd);
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("chaos: restarting mqd: {e}; again");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("mqd does not restart on {}: {e}", self.listen),
            }
        }
    }

    fn act(&mut self, event: Event, rng: &mut Rng) {
        *self.events.entry(format!("{event:?}")).or_default() += 1;
        match event {
            Event::StopConsumer => {
                let running: Vec<usize> = (0..self.consumers.len())
                    .filter(|&i| self.consumers[i].resume_at.is_none())
                    .collect();
                if running.is_empty() {
                    return;
                }
                let c = &mut self.consumers[running[rng.below(running.len() as u64) as usize]];
                let pause = Duration::from_millis(ACK_TIMEOUT_MS) + rng.millis(300, 2500);
                eprintln!("chaos: SIGSTOP {} for {pause:?}", c.name);
                signal(&c.child, Signal::STOP);
                c.resume_at = Some(Instant::now() + pause);
            }
            Event::KillConsumer => {
                let i = rng.below(self.consumers.len() as u64) as usize;
                eprintln!("chaos: SIGKILL {}", self.consumers[i].name);
                kill(&mut self.consumers[i].child);
                self.consumers[i] = self.spawn_consumer();
            }
            Event::KillProducer => {
                let i = rng.below(self.producers.len() as u64) as usize;
                eprintln!("chaos: SIGKILL {}", self.producers[i].name);
                kill(&mut self.producers[i].child);
                self.producers[i] = self.spawn_producer();
            }
            Event::KillBroker => {
                eprintln!("chaos: SIGKILL mqd");
                kill(&mut self.mqd().child);
                self.mqd = None;
                self.broker_resume_at = None;
                self.restart_broker();
            }
            Event::StopBroker => {
                if self.broker_resume_at.is_some() {
                    return;
                }
                let pause = rng.millis(200, 2000);
                eprintln!("chaos: SIGSTOP mqd for {pause:?}");
                signal(&self.mqd().child, Signal::STOP);
                self.broker_resume_at = Some(Instant::now() + pause);
            }
        }
    }

    /// Continues the processes whose stop is over (all of them with `all`).
    fn resume_due(&mut self, all: bool) {
        let now = Instant::now();
        for c in &mut self.consumers {
            if c.resume_at.is_some_and(|t| all || t <= now) {
                eprintln!("chaos: SIGCONT {}", c.name);
                signal(&c.child, Signal::CONT);
                c.resume_at = None;
            }
        }
        if self.broker_resume_at.is_some_and(|t| all || t <= now) {
            eprintln!("chaos: SIGCONT mqd");
            signal(&self.mqd.as_ref().unwrap().child, Signal::CONT);
            self.broker_resume_at = None;
        }
    }

    /// Fails the test if a process exited by itself: none of them ever does.
    fn check_alive(&mut self) {
        if let Some(status) = self.mqd().child.try_wait().unwrap() {
            panic!("mqd exited by itself: {status} (see its output above)");
        }
        for c in self.producers.iter_mut().chain(self.consumers.iter_mut()) {
            if let Some(status) = c.child.try_wait().unwrap() {
                let stderr = std::fs::read_to_string(&c.stderr).unwrap_or_default();
                panic!("{} exited by itself: {status}; its stderr:\n{}", c.name, tail(&stderr));
            }
        }
    }

    /// The group's lag and records in flight, if the broker answers.
    fn group_lag(&self) -> Option<(u64, u64)> {
        let addr = self.mqd.as_ref()?.addr;
        let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        drop(stream);
        let mut admin = Bin::connect(addr);
        let id = admin.send(&Request::Groups);
        match admin.recv_within(Duration::from_secs(10))? {
            (rid, Response::Groups(json)) if rid == id => {
                let reply: mq_protocol::admin::GroupsReply = serde_json::from_slice(&json).ok()?;
                let g = reply.groups.iter().find(|g| g.group == GROUP && g.topic == TOPIC)?;
                Some((g.lag, g.in_flight))
            }
            _ => None,
        }
    }

    /// How often the client processes' output mentions `what` (an error code, say).
    fn clients_saying(&self, what: &str) -> usize {
        let entries = std::fs::read_dir(self.dir.path()).unwrap().map_while(Result::ok);
        entries
            .filter(|e| e.path().extension().is_some_and(|x| x == "stderr"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default().matches(what).count())
            .sum()
    }

    fn stderr_tails(&self) -> String {
        let mut out = String::new();
        for c in self.producers.iter().chain(&self.consumers) {
            let stderr = std::fs::read_to_string(&c.stderr).unwrap_or_default();
            out += &format!("--- {} stderr:\n{}\n", c.name, tail(&stderr));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.producers.iter_mut().chain(self.consumers.iter_mut()) {
            kill(&mut c.child);
        }
        if let Some(mqd) = &mut self.mqd {
            kill(&mut mqd.child);
        }
        if std::env::var_os("MQ_CHAOS_KEEP").is_some() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()).keep();
            eprintln!("chaos: logs and data kept in {}", dir.display());
        }
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Calls `each` with the lines of `path` from byte `from` on that a kill cannot have cut short
/// (a last line without its newline is left for later) and returns where they end.
fn complete_lines(path: &Path, from: u64, mut each: impl FnMut(&str)) -> u64 {
    use std::io::{Read, Seek, SeekFrom};
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        file.seek(SeekFrom::Start(from)).unwrap();
        file.read_to_end(&mut bytes).unwrap();
    }
    let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    String::from_utf8_lossy(&bytes[..end]).lines().for_each(&mut each);
    from + end as u64
}

/// What the producers' logs say: the id ranges they may have published (first → last) and
/// the ids the broker acknowledged.
#[derive(Default)]
struct Published {
    sent: BTreeMap<u64, u64>,
    acked: HashSet<u64>,
}

impl Published {
    fn read(logs: &[PathBuf]) -> Published {
        let mut p = Published::default();
        for log in logs {
            complete_lines(log, 0, |line| {
                let fields: Vec<&str> = line.split(' ').collect();
                match fields[..] {
                    ["S", first, last] => {
                        p.sent.insert(first.parse().unwrap(), last.parse().unwrap());
                    }
                    ["A", id] => {
                        p.acked.insert(id.parse().unwrap());
                    }
                    _ => panic!("bad producer log line in {}: {line:?}", log.display()),
                }
            });
        }
        p
    }

    fn was_sent(&self, id: u64) -> bool {
        self.sent.range(..=id).next_back().is_some_and(|(_, &last)| id <= last)
    }
}

/// What the consumers' logs say: deliveries per id, and values that were not intact. Read
/// incrementally: `update` takes what was appended since the last call.
#[derive(Default)]
struct Received {
    read_up_to: HashMap<PathBuf, u64>,
    deliveries: HashMap<u64, u32>,
    total: u64,
    max_attempt: u32,
    corrupt: Vec<String>,
}

impl Received {
    fn update(&mut self, logs: &[PathBuf]) {
        for log in logs {
            let from = self.read_up_to.get(log).copied().unwrap_or(0);
            let end = complete_lines(log, from, |line| {
                let fields: Vec<&str> = line.split(' ').collect();
                match fields[..] {
                    ["R", id, _partition, _offset, attempt] => {
                        *self.deliveries.entry(id.parse().unwrap()).or_default() += 1;
                        self.total += 1;
                        self.max_attempt = self.max_attempt.max(attempt.parse().unwrap());
                    }
                    _ if line.starts_with("BAD ") => self.corrupt.push(line.to_string()),
                    _ => panic!("bad consumer log line in {}: {line:?}", log.display()),
                }
            });
            self.read_up_to.insert(log.clone(), end);
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn producers_consumers_and_broker_killed_and_stopped_at_random_lose_no_acknowledged_record() {
    let seconds = env_u64("MQ_CHAOS_SECONDS").unwrap_or(20);
    let seed = env_u64("MQ_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            as u64
    });
    eprintln!("chaos: seed {seed} (MQ_CHAOS_SEED={seed} replays the schedule), {seconds} s");
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut cluster = Cluster::start();

    // One event of each kind first, in random order (taken from the back), then any kind.
    let mut first_events = EVENTS.to_vec();
    for i in (1..first_events.len()).rev() {
        first_events.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let chaos_end = Instant::now() + Duration::from_secs(seconds);
    let mut next_event = Instant::now() + rng.millis(500, 1500);
    while Instant::now() < chaos_end {
        std::thread::sleep(Duration::from_millis(50));
        cluster.check_alive();
        cluster.resume_due(false);
        if Instant::now() >= next_event {
            let event = first_events
                .pop()
                .unwrap_or_else(|| EVENTS[rng.below(EVENTS.len() as u64) as usize]);
            cluster.act(event, &mut rng);
            next_event = Instant::now() + rng.millis(300, 1500);
        }
    }

    // Heal: continue everything, stop the producers, let the consumers drain.
    cluster.resume_due(true);
    cluster.check_alive();
    for mut p in std::mem::take(&mut cluster.producers) {
        kill(&mut p.child);
    }
    let published = Published::read(&cluster.producer_logs);
    eprintln!(
        "chaos: {} events {:?}; {} ids acknowledged to producers; draining",
        cluster.events.values().sum::<u32>(),
        cluster.events,
        published.acked.len()
    );
    assert!(!published.acked.is_empty(), "the producers got nothing acknowledged (seed {seed})");
    let drain_timeout = Duration::from_secs(120 + seconds / 2);
    let drain_start = Instant::now();
    let mut received = Received::default();
    let mut lost: Vec<u64> = published.acked.iter().copied().collect();
    loop {
        cluster.check_alive();
        received.update(&cluster.consumer_logs);
        lost.retain(|id| !received.deliveries.contains_key(id));
        if lost.is_empty() || drain_start.elapsed() > drain_timeout {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    if !lost.is_empty() {
        lost.sort_unstable();
        panic!(
            "{} ids acknowledged to producers were never received by a consumer within {:?} \
             (seed {seed}), e.g. {:?}; group lag and in flight now: {:?}\n{}",
            lost.len(),
            drain_timeout,
            &lost[..lost.len().min(20)],
            cluster.group_lag(),
            cluster.stderr_tails()
        );
    }

    // Everything the broker stored (acknowledged or not) is settled by the group in the end.
    let mut lag = cluster.group_lag();
    while lag != Some((0, 0)) && drain_start.elapsed() < drain_timeout {
        cluster.check_alive();
        std::thread::sleep(Duration::from_millis(500));
        lag = cluster.group_lag();
    }
    assert_eq!(
        lag,
        Some((0, 0)),
        "the group's lag and in flight never reached 0 (seed {seed})\n{}",
        cluster.stderr_tails()
    );
    for c in &mut cluster.consumers {
        kill(&mut c.child);
    }

    received.update(&cluster.consumer_logs);
    let unexpected: Vec<u64> =
        received.deliveries.keys().filter(|&&id| !published.was_sent(id)).copied().collect();
    let duplicated = received.deliveries.values().filter(|&&n| n > 1).count();
    eprintln!(
        "chaos: seed {seed}: {} s total; {} events {:?}; {} producer and {} consumer processes; \
         acknowledged {}, received {} distinct ids in {} deliveries: lost 0, duplicates {} \
         ({duplicated} ids more than once), highest attempt {}, unexpected {}, corrupt {}; \
         consumers closed with IDLE_TIMEOUT {} times",
        started.elapsed().as_secs(),
        cluster.events.values().sum::<u32>(),
        cluster.events,
        cluster.producers_started,
        cluster.consumers_started,
        published.acked.len(),
        received.deliveries.len(),
        received.total,
        received.total - received.deliveries.len() as u64,
        received.max_attempt,
        unexpected.len(),
        received.corrupt.len(),
        cluster.clients_saying("IDLE_TIMEOUT"),
    );
    assert!(
        unexpected.is_empty(),
        "consumers received ids no producer published (seed {seed}), e.g. {:?}",
        &unexpected[..unexpected.len().min(20)]
    );
    assert!(
        received.corrupt.is_empty(),
        "consumers received damaged values (seed {seed}), e.g. {:?}",
        &received.corrupt[..received.corrupt.len().min(5)]
    );
}
