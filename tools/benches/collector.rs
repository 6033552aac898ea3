//! Collector benchmarks (release build): durable ingest rate, telemetry query latency from
//! the cache and from a file, and `/api/v1/gpus` requests per second under `wrk`.
//!
//! ```sh
//! cargo bench -p mq-tools --bench collector            # all of it
//! cargo bench -p mq-tools --bench collector -- --quick # smaller, for a smoke run
//! ```
//!
//! Method. An in-process broker (memory storage, so its disk does not share the
//! measurement) is filled first; then a real `telemetry-collector` process (the release
//! binary) drains it into a data directory on disk with every batch synced before its
//! ACK. The rate is samples stored per second between the first and the last stored
//! sample, from `/stats` polled every 10 ms. Queries are timed at the client (keep-alive
//! HTTP, full body read). `wrk` (if installed) loads `/api/v1/gpus`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mq_broker::config::Config;
use mq_broker::event_loop::Running;
use mq_client::{Client, ClientConfig, ProducerConfig};

const T0: i64 = 1_795_943_520_000;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let mut config = Config::memory("127.0.0.1:0".parse().unwrap());
    config.core.retention.bytes = 0; // keep every record: the memory default keeps 4 MiB
    let broker = Running::start(config).unwrap();
    let dir =
        tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()))
            .unwrap();
    println!(
        "data directory: {} (collector release binary, in-process memory broker)",
        dir.path().display()
    );

    let scale: usize = std::env::var("BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let (wide, long) = if quick { (20_000, 40_000) } else { (20_000 * scale, 40_000 * scale) };
    ingest(&broker, &dir.path().join("wide"), "bench-wide", wide, 10, 64);
    ingest(&broker, &dir.path().join("long"), "bench-long", long, 1, 64);
    let hours = std::env::var("BENCH_HOURS").ok().and_then(|s| s.parse().ok());
    queries(&broker, &dir.path().join("query"), hours.unwrap_or(if quick { 2 } else { 6 }), quick);
}

/// One wide record: `metrics` DCGM-named values for `gpu` at `ts_ms`.
fn record(gpu: usize, ts_ms: i64, metrics: usize, seed: u64) -> String {
    const NAMES: [&str; 10] = [
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_MEM_COPY_UTIL",
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_MEMORY_TEMP",
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_SM_CLOCK",
        "DCGM_FI_DEV_MEM_CLOCK",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_FB_FREE",
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
    ];
    let values: Vec<String> = NAMES[..metrics]
        .iter()
        .enumerate()
        .map(|(i, n)| format!("\"{n}\":{}.{}", (seed + i as u64) % 100, seed % 7))
        .collect();
    let ts = jiff::Timestamp::from_millisecond(ts_ms).unwrap().strftime("%Y-%m-%dT%H:%M:%S%.3fZ");
    format!(
        "{{\"timestamp\":\"{ts}\",\"uuid\":\"GPU-{gpu:08x}-86f3-7a43-b711-4771313afc50\",\"hostname\":\"node-{}\",\
         \"gpu_index\":{},\"device\":\"nvidia{}\",\"model\":\"NVIDIA H100 80GB HBM3\",\"metrics\":{{{}}},\
         \"labels\":{{\"DCGM_FI_DRIVER_VERSION\":\"535.129.03\"}}}}",
        gpu / 8,
        gpu % 8,
        gpu % 8,
        values.join(",")
    )
}

fn publish(
    broker: &Running,
    topic: &str,
    records: impl Iterator<Item = (String, String)>,
) -> usize {
    let client = Client::connect(&[broker.addr], ClientConfig::default()).unwrap();
    let config = ProducerConfig { batch_records: 1024, ..ProducerConfig::default() };
    let mut producer = client.producer(config).unwrap();
    let mut n = 0;
    for (key, value) in records {
        producer.send(topic, Some(key.as_bytes()), value.as_bytes()).unwrap();
        n += 1;
        if n % 50_000 == 0 {
            for o in producer.flush().unwrap() {
                o.result.unwrap();
            }
        }
    }
    for o in producer.flush().unwrap() {
        o.result.unwrap();
    }
    n
}

struct Collector {
    child: Child,
    http: SocketAddr,
}

impl Collector {
    fn start(broker: SocketAddr, dir: &std::path::Path, topic: &str, extra: &[&str]) -> Collector {
        let mut child = Command::new(env!("CARGO_BIN_EXE_telemetry-collector"))
            .args(["--addr", &broker.to_string(), "--topic", topic, "--http", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir)
            // The records carry fixed timestamps (`T0`): keep them whatever the date.
            .args(["--retention-hours", "0"])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into())
                    + ",mq_tools::collector::http=info",
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let http = loop {
            let line = lines.next().expect("collector exited").unwrap();
            if let Some(at) = line.find("http listening on ") {
                break line[at + 18..].trim().parse().unwrap();
            }
        };
        let show = std::env::var_os("BENCH_LOG").is_some();
        std::thread::spawn(move || {
            lines.map_while(Result::ok).filter(|_| show).for_each(|l| eprintln!("{l}"))
        });
        Collector { child, http }
    }

    fn stats(&self, client: &reqwest::blocking::Client) -> serde_json::Value {
        client.get(format!("http://{}/stats", self.http)).send().unwrap().json().unwrap()
    }

    fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ingest(
    broker: &Running,
    dir: &std::path::Path,
    topic: &str,
    records: usize,
    metrics: usize,
    gpus: usize,
) {
    if records == 0 {
        return;
    }
    let started = Instant::now();
    let n = publish(
        broker,
        topic,
        (0..records).map(|i| {
            let gpu = i % gpus;
            (
                format!("GPU-{gpu:08x}"),
                record(gpu, T0 + (i / gpus) as i64 * 1000, metrics, i as u64),
            )
        }),
    );
    let publish_s = started.elapsed().as_secs_f64();
    let collector = Collector::start(broker.addr, dir, topic, &[]);
    let client = reqwest::blocking::Client::new();
    let samples = (n * metrics) as u64;
    let (mut first, mut last) = (None, Instant::now());
    loop {
        let stats = collector.stats(&client);
        let stored = stats["samples_stored"].as_u64().unwrap();
        if stored > 0 && first.is_none() {
            first = Some((Instant::now(), stored));
        }
        if stored >= samples {
            last = Instant::now().max(last);
            let (t, s0) = first.unwrap();
            let secs = (last - t).as_secs_f64().max(1e-3);
            let bytes: u64 = std::fs::read_dir(dir.join("gpus"))
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum();
            println!(
                "ingest {topic}: {n} records x {metrics} metrics, {gpus} GPUs (published in {publish_s:.2} s): \
                 {:.0} samples/s, {:.0} records/s, {:.1} MB/s of JSONL; {} batches, mean sync {} us",
                (samples - s0) as f64 / secs,
                (samples - s0) as f64 / metrics as f64 / secs,
                bytes as f64 / 1e6 * ((samples - s0) as f64 / samples as f64) / secs,
                stats["batches"],
                stats["sync_us_mean"],
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    collector.stop();
}

fn queries(broker: &Running, dir: &std::path::Path, hours: i64, quick: bool) {
    let seconds = hours * 3600;
    let others = 63usize;
    let hour_gpu = 999usize;
    let hour_records = (0..seconds)
        .map(|s| (format!("GPU-{hour_gpu:08x}"), record(hour_gpu, T0 + s * 1000, 10, s as u64)));
    let other_records = (0..others * 10)
        .map(|i| (format!("GPU-{:08x}", i % others), record(i % others, T0 + i as i64, 10, 1)));
    publish(broker, "bench-query", hour_records.chain(other_records));
    let collector =
        Collector::start(broker.addr, dir, "bench-query", &["--cache-samples-per-gpu", "40000"]);
    let client = reqwest::blocking::Client::new();
    let total = (seconds as u64 + others as u64 * 10) * 10;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stats = collector.stats(&client);
        if stats["samples_stored"].as_u64().unwrap() >= total {
            break;
        }
        assert!(Instant::now() < deadline, "not all stored: {stats}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ts = |ms: i64| {
        jiff::Timestamp::from_millisecond(ms).unwrap().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    };
    let gpu = format!("GPU-{hour_gpu:08x}-86f3-7a43-b711-4771313afc50");
    let last_hour = (T0 + (seconds - 3600) * 1000, T0 + (seconds - 1) * 1000);
    let middle_hour = (T0 + (seconds / 2 - 1800) * 1000, T0 + (seconds / 2 + 1799) * 1000);
    println!(
        "query GPU with {hours} h of 1 s samples of 10 metrics ({} samples); 1-hour windows:",
        seconds * 10
    );
    for (name, (start, end), source) in
        [("last hour", last_hour, "cache"), ("middle hour", middle_hour, "file")]
    {
        for limit in ["", "&limit=100000"] {
            let url = format!(
                "http://{}/api/v1/gpus/{gpu}/telemetry?start_time={}&end_time={}{limit}",
                collector.http,
                ts(start),
                ts(end)
            );
            time_query(&client, &url, name, source, if quick { 20 } else { 200 });
        }
    }
    run_wrk(collector.http, quick);
    if let Some(hold_s) = std::env::var("BENCH_HOLD_S").ok().and_then(|s| s.parse().ok()) {
        let (start, end) = last_hour;
        println!(
            "holding {hold_s} s: http://{}/api/v1/gpus/{gpu}/telemetry?start_time={}&end_time={}&limit=100000",
            collector.http,
            ts(start),
            ts(end)
        );
        std::thread::sleep(Duration::from_secs(hold_s));
    }
    collector.stop();
}

fn time_query(
    client: &reqwest::blocking::Client,
    url: &str,
    name: &str,
    source: &str,
    runs: usize,
) {
    let mut times = Vec::with_capacity(runs);
    let mut count: u64 = 0;
    for _ in 0..runs {
        let started = Instant::now();
        let body = client.get(url).send().unwrap().bytes().unwrap();
        times.push(started.elapsed());
        // Only the head of the page is read: timing stops at the last byte, not after the
        // client has parsed 36,000 samples.
        let head = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        assert!(head.contains(&format!("\"source\":\"{source}\"")), "{url}: {head}");
        let at = head.find("\"count\":").expect("count") + 8;
        count = head[at..].split(',').next().unwrap().parse().unwrap();
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "  {name} from {source}, {count} samples returned: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({runs} runs)",
        ms(times[runs / 2]),
        ms(times[runs * 99 / 100]),
        ms(times[runs - 1])
    );
}

fn run_wrk(http: SocketAddr, quick: bool) {
    let duration = if quick { "3s" } else { "10s" };
    let url = format!("http://{http}/api/v1/gpus");
    match Command::new("wrk").args(["-t2", "-c64", "-d", duration, "--latency", &url]).output() {
        Ok(out) => {
            println!("wrk -t2 -c64 -d{duration} --latency {url} (64 GPUs in the list):");
            print!("{}", String::from_utf8_lossy(&out.stdout));
        }
        Err(_) => println!("wrk is not installed (apt-get install wrk): /api/v1/gpus load skipped"),
    }
}
