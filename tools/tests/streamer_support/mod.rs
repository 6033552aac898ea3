//! Helpers of the streamer's integration tests: run the binary, write test CSV files,
//! start an in-process broker, and read a whole topic back.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mq_broker::config::Config;
use mq_broker::event_loop::Running;
use mq_client::{Client, ClientConfig, ConsumerConfig, StartPosition};
use mq_tools::telemetry::TelemetryRecord;

/// The streamer binary.
pub const STREAMER: &str = env!("CARGO_BIN_EXE_telemetry-streamer");

/// The real DCGM export, if this checkout has `shared/` beside it.
pub fn real_dcgm_file() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/dcgm_metrics_20250718_134233.csv");
    if path.exists() {
        Some(path)
    } else {
        println!("skipped: {} is absent", path.display());
        None
    }
}

/// A test directory that disappears on drop.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("streamer-test").tempdir().expect("a temp dir")
}

/// Writes `bytes` to `name` in `dir` and returns the path.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write test file");
    path
}

/// A wide CSV of `rows` rows over `gpus` GPUs; row `i` has `seq` = i, so every row can be
/// found again in the topic.
pub fn numbered_csv(dir: &Path, rows: u64, gpus: u64) -> PathBuf {
    let mut text = String::from("uuid,hostname,index,seq,temperature.gpu [C]\n");
    for i in 0..rows {
        let g = i % gpus;
        text.push_str(&format!("GPU-test-{g:04},node-{},{},{i},{} C\n", g / 8, g % 8, 30 + i % 50));
    }
    write_file(dir, "numbered.csv", text.as_bytes())
}

/// Runs the streamer with `args` to the end.
pub fn run_streamer(args: &[&str]) -> Output {
    Command::new(STREAMER)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("the streamer runs")
}

/// Starts the streamer with `args`, its stderr piped.
pub fn spawn_streamer(args: &[&str]) -> Child {
    Command::new(STREAMER)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the streamer starts")
}

/// Sends `signal` (`TERM`, `INT`) to a child.
pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Waits for a child up to `timeout` and returns its exit code and stderr.
#[track_caller]
pub fn wait_for(mut child: Child, timeout: Duration) -> (i32, String) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            return (status.code().unwrap_or(-1), stderr);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the streamer did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A number from the summary on stderr: the first integer after `label`.
#[track_caller]
pub fn summary_count(stderr: &str, label: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{stderr}"));
    let rest = &line.trim_start()[label.len()..];
    let digits: String =
        rest.trim_start().chars().take_while(|c| c.is_ascii_digit() || *c == ',').collect();
    digits.replace(',', "").parse().unwrap_or_else(|_| panic!("no number in {line:?}"))
}

/// An in-memory broker on a free port.
pub fn memory_broker() -> Running {
    let _ = env_logger::builder().is_test(true).try_init();
    Running::start(Config::memory("127.0.0.1:0".parse().unwrap())).expect("broker starts")
}

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// One record read back from the topic.
#[derive(Debug, Clone)]
pub struct Stored {
    pub partition: u32,
    pub offset: u64,
    pub key: String,
    pub record: TelemetryRecord,
}

/// Reads every record of `topic` from the start, in a group of its own, until `expected`
/// arrived and nothing more came for a moment (or `timeout` passed).
pub fn read_topic(addr: &str, topic: &str, expected: usize, timeout: Duration) -> Vec<Stored> {
    let client = Client::connect(&[addr], ClientConfig::default()).expect("connect");
    let group = format!("check-{}", std::process::id());
    let config = ConsumerConfig { start: StartPosition::Earliest, ..ConsumerConfig::default() };
    let mut consumer = client.subscribe(topic, &group, config).expect("subscribe");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        let batch = consumer.poll(Duration::from_millis(100)).expect("poll");
        if batch.is_empty() {
            if out.len() >= expected && quiet_since.elapsed() > Duration::from_millis(300) {
                break;
            }
            continue;
        }
        quiet_since = Instant::now();
        for m in &batch {
            let record = serde_json::from_slice(&m.value).expect("a telemetry record");
            let key = String::from_utf8(m.key.clone().unwrap_or_default().to_vec()).unwrap();
            out.push(Stored { partition: m.partition, offset: m.offset, key, record });
        }
        consumer.ack_many(&batch).expect("ack");
    }
    out
}

/// How often each `seq` metric value occurs among `stored`.
pub fn seq_counts(stored: &[Stored]) -> BTreeMap<u64, u32> {
    let mut counts = BTreeMap::new();
    for s in stored {
        let seq = s.record.metrics["seq"] as u64;
        *counts.entry(seq).or_insert(0) += 1;
    }
    counts
}

/// Records of a `--dry-run` stdout, without their processing timestamp.
pub fn parse_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    let text = std::str::from_utf8(stdout).expect("UTF-8 output");
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value =
                serde_json::from_str(l).expect("one JSON object per line");
            v.as_object_mut().unwrap().remove("timestamp").expect("a timestamp");
            v
        })
        .collect()
}

/// Writes `lines` to a file, one per line.
pub fn write_lines(path: &Path, lines: &[serde_json::Value]) {
    let mut f = std::fs::File::create(path).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}
