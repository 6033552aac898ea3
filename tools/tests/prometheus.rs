//! A real Prometheus (Debian's `prometheus` package; `.ci/run` installs it, this skips with a
//! message where it is absent) scrapes a collector and a gateway on loopback. Records carry
//! the labels DCGM's `labels_raw` has (`__name__`, `instance`, `job`) besides their own:
//! before they were stripped, Prometheus 2.42 marked both targets down ("label name
//! \"__name__\" is not unique: invalid sample") and stored nothing; `promtool check
//! metrics` said `label name "__name__" is reserved`.

mod collector_support;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use collector_support::*;
use serde_json::Value;

/// The test's Prometheus, killed when dropped.
struct Prometheus {
    child: Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn has(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success())
}

fn start_prometheus(targets: &[(&str, std::net::SocketAddr)]) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let mut config = String::from("global:\n  scrape_interval: 1s\nscrape_configs:\n");
    for (job, addr) in targets {
        config.push_str(&format!(
            "  - job_name: {job}\n    static_configs:\n      - targets: ['{addr}']\n"
        ));
    }
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus starts");
    Prometheus { child, addr, _dir: dir }
}

/// An instant PromQL query's result vector.
fn query(prometheus: &Prometheus, promql: &str) -> Vec<Value> {
    let url = format!("http://{}/api/v1/query", prometheus.addr);
    let Ok(resp) = reqwest::blocking::Client::new().get(&url).query(&[("query", promql)]).send()
    else {
        return Vec::new();
    };
    let body: Value = resp.json().unwrap_or(Value::Null);
    body["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// Waits until `promql` returns `n` series.
#[track_caller]
fn wait_series(prometheus: &Prometheus, promql: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let result = query(prometheus, promql);
        if result.len() == n {
            return result;
        }
        assert!(Instant::now() < deadline, "{promql}: {result:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn record_with_dcgm_labels(uuid: &str, gpu: u32) -> String {
    serde_json::json!({
        "timestamp": ts(base_ms() + 3_600_000),
        "uuid": uuid,
        "hostname": "node-1",
        "gpu_index": gpu,
        "device": format!("nvidia{gpu}"),
        "model": "NVIDIA H100 80GB HBM3",
        "metrics": {"DCGM_FI_DEV_GPU_TEMP": 40.0 + f64::from(gpu)},
        "labels": {
            "__name__": "DCGM_FI_DEV_GPU_TEMP",
            "instance": "node-1:9400",
            "job": "dcgm-exporter",
            "pod": "trainer-0",
        },
    })
    .to_string()
}

#[test]
fn prometheus_scrapes_collector_and_gateway_with_dcgm_exporter_labels() {
    if !has("prometheus") || !has("promtool") {
        eprintln!("SKIPPED: no `prometheus`/`promtool` on the PATH (apt-get install prometheus)");
        return;
    }
    let broker = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let collector = Server::collector(broker.addr, dir.path(), &[]);
    let gateway = Server::gateway(&[&collector]);
    let gpus: Vec<String> =
        (0..3).map(|i| format!("GPU-{i:08}-0000-0000-0000-000000000000")).collect();
    let records: Vec<(String, String)> = gpus
        .iter()
        .enumerate()
        .map(|(i, uuid)| (uuid.clone(), record_with_dcgm_labels(uuid, i as u32)))
        .collect();
    publish(broker.addr, "telemetry", &records);
    collector.wait_stats("3 samples stored", |s| s["samples_stored"] == 3);

    let (status, page) = collector.get("/metrics");
    assert_eq!(status, 200);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    let report =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    for problem in ["reserved", "not unique", "error", "duplicate"] {
        assert!(!report.contains(problem), "promtool check metrics: {report}");
    }

    let prometheus = start_prometheus(&[("collector", collector.http), ("gateway", gateway.http)]);
    let up = wait_series(&prometheus, "up == 1", 2);
    assert_eq!(up.len(), 2, "both targets up: {up:?}");
    for job in ["collector", "gateway"] {
        let series = wait_series(&prometheus, &format!("DCGM_FI_DEV_GPU_TEMP{{job=\"{job}\"}}"), 3);
        let mut seen: Vec<&str> =
            series.iter().map(|s| s["metric"]["UUID"].as_str().unwrap()).collect();
        seen.sort_unstable();
        assert_eq!(seen, gpus.iter().map(String::as_str).collect::<Vec<_>>(), "{job}");
        for s in &series {
            let labels = s["metric"].as_object().unwrap();
            for name in ["gpu", "UUID", "device", "modelName", "Hostname", "pod"] {
                assert!(labels.contains_key(name), "{job}: no {name}: {labels:?}");
            }
            assert!(!labels.keys().any(|k| k.starts_with("exported_")), "{job}: {labels:?}");
            assert_eq!(
                labels["instance"],
                (if job == "collector" { collector.http } else { gateway.http }).to_string()
            );
        }
    }
}
