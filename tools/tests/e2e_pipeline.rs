//! The whole pipeline as real processes: `mqd`, two `telemetry-streamer`s sharding one CSV,
//! two `telemetry-collector`s in one group, and a `telemetry-gateway` in front of them. Through
//! the gateway's HTTP API every GPU of the input must be listed with exactly as many samples
//! as the input has rows for it (every row stored exactly once); then every process gets
//! SIGTERM and must exit 0.
//!
//! The input is the real DCGM export in `../shared/data/` when it is there; otherwise (or with
//! `MQ_E2E_GENERATED=1`) a CSV of the same shape that the test generates.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const REAL_CSV: &str = "../../shared/data/dcgm_metrics_20250718_134233.csv";

/// A child process whose log (stderr) is echoed, with the first address it reports.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    /// Starts `exe` and, if `marker` is given, waits for a log line containing it and
    /// returns the address that follows.
    fn start(
        name: &'static str,
        exe: &Path,
        args: &[String],
        marker: Option<&str>,
    ) -> (Proc, Option<String>) {
        let mut child = Command::new(exe)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let wanted = marker.map(str::to_string);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let (Some(m), Some(_)) = (&wanted, &tx) {
                    if let Some(rest) = line.split(m.as_str()).nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or_default().to_string();
                        let _ = tx.take().unwrap().send(addr);
                    }
                }
                eprintln!("[{name}] {line}");
            }
        });
        let addr = marker.map(|_| {
            rx.recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("{name} never reported its address"))
        });
        (Proc { name, child }, addr)
    }

    fn terminate(&mut self) -> i32 {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        self.wait(Duration::from_secs(30))
    }

    fn wait(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "{} did not exit within {timeout:?}", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A binary of this workspace: the tools' own are given by cargo; `mqd` (another package)
/// is found beside them, built first if a lone `cargo test -p mq-tools` did not build it.
fn workspace_bin(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_BIN_EXE_telemetry-streamer")).parent().unwrap().to_path_buf();
    let path = dir.join(name);
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "mq-broker", "--bin", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success(), "building {name} failed");
    }
    path
}

/// Rows per GPU uuid of a long-layout DCGM CSV.
fn rows_per_gpu(csv: &Path) -> BTreeMap<String, u64> {
    let mut reader = csv::Reader::from_path(csv).unwrap();
    let uuid_col =
        reader.headers().unwrap().iter().position(|h| h.eq_ignore_ascii_case("uuid")).unwrap();
    let mut counts = BTreeMap::new();
    for row in reader.records() {
        *counts.entry(row.unwrap()[uuid_col].to_string()).or_insert(0) += 1;
    }
    counts
}

/// A CSV shaped like the DCGM export: 3 hosts × 4 GPUs × 6 metrics × 10 scrapes.
fn generate_csv(path: &Path) {
    let mut out = String::from("timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,container,pod,namespace,value,labels_raw\n");
    let metrics = [
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_SM_CLOCK",
        "DCGM_FI_DEV_MEM_COPY_UTIL",
    ];
    for scrape in 0..10 {
        for host in 0..3 {
            for gpu in 0..4 {
                for (m, metric) in metrics.iter().enumerate() {
                    let uuid = format!("GPU-{host:08x}-0000-0000-0000-{gpu:012x}");
                    out.push_str(&format!(
                        "\"2025-07-18T20:42:{scrape:02}Z\",\"{metric}\",\"{gpu}\",\"nvidia{gpu}\",\"{uuid}\",\"NVIDIA H100 80GB HBM3\",\"node-{host}\",\"\",\"\",\"\",\"{}\",\"Hostname=\"\"node-{host}\"\",UUID=\"\"{uuid}\"\"\"\n",
                        (scrape * 7 + m * 3 + gpu) % 100
                    ));
                }
            }
        }
    }
    std::fs::write(path, out).unwrap();
}

fn get_json(url: &str) -> serde_json::Value {
    reqwest::blocking::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

#[test]
fn broker_streamers_collectors_and_gateway_store_every_row_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let real = Path::new(env!("CARGO_MANIFEST_DIR")).join(REAL_CSV);
    // MQ_E2E_GENERATED=1 exercises the generated input even where the real file exists.
    let csv = if real.exists() && std::env::var_os("MQ_E2E_GENERATED").is_none() {
        real
    } else {
        eprintln!("{} is absent: using generated DCGM-shaped data", real.display());
        let path = tmp.path().join("generated.csv");
        generate_csv(&path);
        path
    };
    let expected = rows_per_gpu(&csv);
    let rows: u64 = expected.values().sum();

    let arg = |s: &str| s.to_string();
    let (mut mqd, addr) = Proc::start(
        "mqd",
        &workspace_bin("mqd"),
        &[
            arg("--listen"),
            arg("127.0.0.1:0"),
            arg("--data-dir"),
            tmp.path().join("broker").display().to_string(),
        ],
        Some("listening on "),
    );
    let addr = addr.unwrap();

    let mut collectors = Vec::new();
    let mut urls = Vec::new();
    for i in 0..2 {
        let (p, http) = Proc::start(
            if i == 0 { "collector-0" } else { "collector-1" },
            Path::new(env!("CARGO_BIN_EXE_telemetry-collector")),
            &[
                arg("--addr"),
                addr.clone(),
                arg("--http"),
                arg("127.0.0.1:0"),
                arg("--data-dir"),
                tmp.path().join(format!("collector-{i}")).display().to_string(),
            ],
            Some("http listening on "),
        );
        urls.push(format!("http://{}", http.unwrap()));
        collectors.push(p);
    }
    let mut gateway_args = vec![arg("--http"), arg("127.0.0.1:0")];
    for url in &urls {
        gateway_args.extend([arg("--collector"), url.clone()]);
    }
    let (mut gateway, gw) = Proc::start(
        "gateway",
        Path::new(env!("CARGO_BIN_EXE_telemetry-gateway")),
        &gateway_args,
        Some("http listening on "),
    );
    let gw = format!("http://{}", gw.unwrap());

    // Both collectors are members before anything is published, so each partition (and so
    // each GPU) has one owner from the start.
    let mut admin =
        mq_client::Client::connect(&[addr.as_str()], mq_client::ClientConfig::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while admin
        .groups()
        .unwrap()
        .groups
        .iter()
        .find(|g| g.group == "collectors")
        .map_or(0, |g| g.members)
        < 2
    {
        assert!(Instant::now() < deadline, "the collectors never joined their group");
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut streamers: Vec<Proc> = (0..2)
        .map(|i| {
            Proc::start(
                if i == 0 { "streamer-0" } else { "streamer-1" },
                Path::new(env!("CARGO_BIN_EXE_telemetry-streamer")),
                &[
                    arg("--addr"),
                    addr.clone(),
                    arg("--file"),
                    csv.display().to_string(),
                    arg("--once"),
                    arg("--shard"),
                    format!("{i}/2"),
                    arg("--progress"),
                    arg("0"),
                ],
                None,
            )
            .0
        })
        .collect();
    for s in &mut streamers {
        assert_eq!(
            s.wait(Duration::from_secs(60)),
            0,
            "{} exits 0 after publishing its shard",
            s.name
        );
    }

    // Every GPU listed, with exactly its rows as samples, through the gateway.
    let deadline = Instant::now() + Duration::from_secs(60);
    let stored = loop {
        let gpus = get_json(&format!("{gw}/api/v1/gpus"));
        let stored: BTreeMap<String, u64> = gpus["gpus"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| (g["uuid"].as_str().unwrap().to_string(), g["sample_count"].as_u64().unwrap()))
            .collect();
        if stored == expected || Instant::now() > deadline {
            break stored;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(stored.len(), expected.len(), "every GPU of the input is listed");
    assert_eq!(stored, expected, "every row is stored exactly once ({rows} rows)");

    // Each collector holds part of the GPUs (partition ownership), and they add up.
    let per_collector: Vec<u64> = urls
        .iter()
        .map(|u| get_json(&format!("{u}/api/v1/gpus"))["count"].as_u64().unwrap())
        .collect();
    assert_eq!(
        per_collector.iter().sum::<u64>(),
        expected.len() as u64,
        "no GPU is on both collectors"
    );

    // A query through the gateway reaches the collector that has the GPU.
    let (uuid, count) = expected.iter().next().unwrap();
    let page = get_json(&format!("{gw}/api/v1/gpus/{uuid}/telemetry?limit=100000"));
    assert_eq!(page["samples"].as_array().unwrap().len() as u64, *count);

    assert_eq!(gateway.terminate(), 0, "gateway exits 0 on SIGTERM");
    for c in &mut collectors {
        assert_eq!(c.terminate(), 0, "{} exits 0 on SIGTERM", c.name);
    }
    assert_eq!(mqd.terminate(), 0, "mqd exits 0 on SIGTERM");
}
