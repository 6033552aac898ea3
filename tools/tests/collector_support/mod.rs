//! Helpers of the collector and gateway tests: an in-process broker, collectors and
//! gateways as real processes on `127.0.0.1:0` (their bound HTTP address is read from the
//! "http listening on" log line), records published with `mq_client::Producer`, and plain
//! HTTP calls.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mq_broker::config::Config;
use mq_broker::event_loop::Running;
use mq_client::{Client, ClientConfig, ProducerConfig};

pub const COLLECTOR: &str = env!("CARGO_BIN_EXE_telemetry-collector");
pub const GATEWAY: &str = env!("CARGO_BIN_EXE_telemetry-gateway");

/// How long a test waits for a condition before failing.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// An in-memory broker in this process.
pub fn start_broker() -> Running {
    let _ = env_logger::builder().is_test(true).try_init();
    Running::start(Config::memory("127.0.0.1:0".parse().unwrap())).expect("broker starts")
}

/// A server process (collector or gateway) and its log.
pub struct Server {
    pub child: Child,
    pub http: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `exe` with `args` and waits for its "http listening on" line.
    #[track_caller]
    pub fn start(exe: &str, args: &[String]) -> Server {
        let mut child = Command::new(exe)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn server");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("http listening on ") {
                    let addr = line[at + 18..].split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(PATIENCE) {
            Ok(a) => a,
            Err(_) => panic!("server did not start; log:\n{}", log.lock().unwrap().join("\n")),
        };
        Server { child, http: addr.parse().expect("address in the log"), log }
    }

    /// A collector on `data_dir` consuming from `broker`, with extra flags.
    #[track_caller]
    pub fn collector(broker: SocketAddr, data_dir: &Path, extra: &[&str]) -> Server {
        let mut args: Vec<String> = vec![
            "--addr".into(),
            broker.to_string(),
            "--http".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Server::start(COLLECTOR, &args)
    }

    /// A gateway over `collectors`.
    #[track_caller]
    pub fn gateway(collectors: &[&Server]) -> Server {
        let mut args: Vec<String> = vec!["--http".into(), "127.0.0.1:0".into()];
        for c in collectors {
            args.push("--collector".into());
            args.push(format!("http://{}", c.http));
        }
        Server::start(GATEWAY, &args)
    }

    /// `GET path`: status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        get(self.http, path)
    }

    /// `GET path`, which must answer 200 with JSON.
    #[track_caller]
    pub fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("JSON body")
    }

    /// `GET path` as JSON, whatever the status.
    #[track_caller]
    pub fn json_any(&self, path: &str) -> serde_json::Value {
        serde_json::from_str(&self.get(path).1).expect("JSON body")
    }

    /// Waits until `check` holds for `/stats`.
    #[track_caller]
    pub fn wait_stats(
        &self,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (status, body) = self.get("/stats");
            if status == 200 {
                let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
                if check(&stats) {
                    return stats;
                }
                if Instant::now() > deadline {
                    panic!(
                        "timed out waiting for {what}; stats {stats}\nlog:\n{}",
                        self.log_text()
                    );
                }
            } else if Instant::now() > deadline {
                panic!("timed out waiting for {what}; /stats {status}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for `/health` to answer `status`.
    #[track_caller]
    pub fn wait_health(&self, status: u16) {
        let deadline = Instant::now() + PATIENCE;
        while self.get("/health").0 != status {
            assert!(Instant::now() < deadline, "health never became {status}\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// SIGKILL, and reap.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        assert!(sent.expect("run kill").success());
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw `GET` over a new connection, so paths reach the server byte for byte (no client
/// normalises `..` or re-encodes anything).
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read reply");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status: u16 = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        unchunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// A telemetry record's JSON.
pub fn record(uuid: &str, ts_ms: i64, metrics: &[(&str, f64)]) -> String {
    let metrics: serde_json::Map<String, serde_json::Value> =
        metrics.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect();
    serde_json::json!({
        "timestamp": ts(ts_ms),
        "uuid": uuid,
        "hostname": "node-1",
        "gpu_index": 0,
        "device": "nvidia0",
        "model": "NVIDIA H100 80GB HBM3",
        "metrics": metrics,
        "labels": {"driver": "535.129.03"},
    })
    .to_string()
}

/// RFC 3339 with milliseconds.
pub fn ts(ts_ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ts_ms).unwrap().strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Publishes `(key, payload)` records to `topic` and waits until the broker stored them all.
#[track_caller]
pub fn publish(broker: SocketAddr, topic: &str, records: &[(String, String)]) {
    let client = Client::connect(&[broker], ClientConfig::default()).expect("connect");
    let mut producer = client.producer(ProducerConfig::default()).expect("producer");
    for (key, payload) in records {
        producer.send(topic, Some(key.as_bytes()), payload.as_bytes()).expect("send");
    }
    for outcome in producer.flush().expect("flush") {
        outcome.result.expect("stored");
    }
}

/// The group's lag and members on `topic`, as the broker reports it.
pub fn group_state(broker: SocketAddr, group: &str, topic: &str) -> (u64, u32) {
    let mut client = Client::connect(&[broker], ClientConfig::default()).expect("connect");
    let groups = client.groups().expect("groups");
    groups
        .groups
        .iter()
        .find(|g| g.group == group && g.topic == topic)
        .map_or((u64::MAX, 0), |g| (g.lag, g.members))
}

/// A time for test records: 10 s before the start of the previous hour, so a test's data
/// is recent (within the default retention of 168 hours) and its first 20 s span two hour
/// files. The same all through one test process.
pub fn base_ms() -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        let now = jiff::Timestamp::now().as_millisecond();
        now.div_euclid(3_600_000) * 3_600_000 - 3_600_000 - 10_000
    })
}

/// The name of the hour directory `ts_ms` is stored in: `YYYY-MM-DDTHH`.
pub fn hour_name(ts_ms: i64) -> String {
    ts(ts_ms)[..13].to_string()
}

/// Every file under `gpus/` of a data directory, as `<hour>/<file>` (or `<file>` for one
/// directly in `gpus/`), links included.
pub fn gpu_files(data_dir: &Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(data_dir.join("gpus")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().unwrap().is_dir() {
            for file in std::fs::read_dir(entry.path()).unwrap() {
                out.insert(format!("{name}/{}", file.unwrap().file_name().to_string_lossy()));
            }
        } else {
            out.insert(name);
        }
    }
    out
}

/// Every stored line of a data directory, as (gpu, partition, offset, metric).
pub fn stored_lines(data_dir: &Path) -> Vec<(String, u64, u64, String)> {
    let mut out = Vec::new();
    for name in gpu_files(data_dir) {
        let path = data_dir.join("gpus").join(&name);
        let gpu = path.file_stem().unwrap().to_string_lossy().into_owned();
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("every kept line parses");
            out.push((
                gpu.clone(),
                v["p"].as_u64().unwrap(),
                v["o"].as_u64().unwrap(),
                v["metric"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}
