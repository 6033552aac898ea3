//! The collector end to end: records published to an in-process broker come out of the
//! HTTP API of a real `telemetry-collector` process; bad records are counted and sent to
//! the dead-letter topic; bad parameters and path-traversal ids get 400s.

mod collector_support;

use std::collections::HashSet;
use std::time::Duration;

use collector_support::*;
use mq_client::{Client, ClientConfig, ConsumerConfig, StartPosition};
use serde_json::Value;

const METRICS: [&str; 3] =
    ["DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_POWER_USAGE"];

/// 3 GPUs × 20 wide records (3 metrics each, one per second), plus 6 bad records.
fn workload() -> Vec<(String, String)> {
    let t0 = base_ms();
    let mut records = Vec::new();
    for i in 0..20i64 {
        for gpu in ["GPU-a", "GPU-b", "GPU-c"] {
            let metrics: Vec<(&str, f64)> = METRICS.iter().map(|m| (*m, i as f64)).collect();
            records.push((gpu.to_string(), record(gpu, t0 + i * 1000, &metrics)));
        }
    }
    let bad = [
        "not json at all".to_string(),
        r#"{"timestamp":"2026-11-29T09:12:00.000Z","metrics":{"A":1}}"#.to_string(),
        record("../../etc/x", t0, &[("A", 1.0)]),
        r#"{"timestamp":"yesterday","uuid":"GPU-a","metrics":{"A":1}}"#.to_string(),
        r#"{"timestamp":"2026-11-29T09:12:00.000Z","uuid":"GPU-a","metrics":{"A":"NaN"}}"#
            .to_string(),
        record("GPU-evil", t0, &[("A", 1.0)]),
    ];
    records.extend(bad.into_iter().map(|b| ("bad".to_string(), b)));
    records
}

fn timestamps(page: &Value) -> Vec<String> {
    page["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["timestamp"].as_str().unwrap().to_string())
        .collect()
}

/// Goal: the whole API over real published data. Method: publish the workload (with a
/// planted symbolic link for one GPU id), wait for the counters, then query every endpoint
/// and compare with what was published.
#[test]
fn published_records_come_out_of_the_api() {
    let broker = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let t0 = base_ms();
    let hour = dir.path().join("gpus").join(hour_name(t0));
    std::fs::create_dir_all(&hour).unwrap();
    let outside = dir.path().join("outside.txt");
    std::fs::write(&outside, "untouched").unwrap();
    std::os::unix::fs::symlink(&outside, hour.join("GPU-evil.jsonl")).unwrap();
    // Where a file from before hour directories would be: ignored, not followed.
    std::os::unix::fs::symlink(&outside, dir.path().join("gpus/GPU-evil.jsonl")).unwrap();
    let collector = Server::collector(broker.addr, dir.path(), &["--cache-samples-per-gpu", "10"]);
    publish(broker.addr, "telemetry", &workload());
    let stats = collector.wait_stats("60 stored and 6 bad", |s| {
        s["records_stored"] == 60
            && s["bad_records"]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_u64().unwrap())
                .sum::<u64>()
                == 6
    });
    assert_eq!(stats["samples_stored"], 180);
    let bad = &stats["bad_records"];
    assert_eq!((bad["bad_json"].as_u64(), bad["missing_gpu_id"].as_u64()), (Some(1), Some(1)));
    assert_eq!((bad["bad_gpu_id"].as_u64(), bad["bad_timestamp"].as_u64()), (Some(2), Some(1)));
    assert_eq!(bad["bad_value"], 1);
    assert_eq!(
        std::fs::read_to_string(&outside).unwrap(),
        "untouched",
        "the link was not followed"
    );

    let gpus = collector.json("/api/v1/gpus");
    assert_eq!(gpus["count"], 3);
    let a = &gpus["gpus"][0];
    assert_eq!(a["uuid"], "GPU-a");
    assert_eq!((a["hostname"].as_str(), a["gpu_index"].as_u64()), (Some("node-1"), Some(0)));
    assert_eq!(a["model"], "NVIDIA H100 80GB HBM3");
    assert_eq!(
        (a["first_seen"].as_str(), a["last_seen"].as_str()),
        (Some(&*ts(t0)), Some(&*ts(t0 + 19_000)))
    );
    assert_eq!(a["sample_count"], 60);

    // 10 s in the hour of t0, 10 s in the next: one file per GPU and hour.
    let (h0, h1) = (hour_name(t0), hour_name(t0 + 10_000));
    let mut expected: HashSet<String> = ["GPU-evil.jsonl".to_string()].into();
    for gpu in ["GPU-a", "GPU-b", "GPU-c", "GPU-evil"] {
        expected.insert(format!("{h0}/{gpu}.jsonl"));
        if gpu != "GPU-evil" {
            expected.insert(format!("{h1}/{gpu}.jsonl"));
        }
    }
    let files: HashSet<String> = gpu_files(dir.path()).into_iter().collect();
    assert_eq!(files, expected, "no file for a bad id");

    check_telemetry(&collector);
    check_dead_letters(broker.addr);

    let (status, metrics) = collector.get("/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n"), "{metrics}");
    assert!(metrics.contains(
        "DCGM_FI_DEV_GPU_UTIL{gpu=\"0\",UUID=\"GPU-a\",device=\"nvidia0\",modelName=\"NVIDIA H100 80GB HBM3\",\
         Hostname=\"node-1\",driver=\"535.129.03\"} 19\n"
    ), "{metrics}");
    assert!(metrics.contains("collector_records_stored_total 60\n"));

    let health = collector.json("/health");
    assert_eq!(health["status"], "ok");
    assert!(health["version"].is_string() && health["timestamp"].is_string());
    assert_eq!(health["broker"]["connected"], true);

    let (status, served) = collector.get("/openapi.json");
    assert_eq!(status, 200);
    let spec: Value = serde_json::from_str(&served).unwrap();
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/openapi.json");
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert_eq!(spec, stored, "the served document is spec/openapi.json");
}

/// Time ranges, metric filters, pagination, and cache against file.
fn check_telemetry(collector: &Server) {
    let t0 = base_ms();
    let all = collector.json("/api/v1/gpus/GPU-a/telemetry?limit=100000");
    assert_eq!(all["count"], 60);
    assert_eq!(all["source"], "file", "the cache holds 10 samples, the range is all time");
    let times = timestamps(&all);
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "ordered by time");

    // Inclusive at both ends: seconds 5 to 9 are 5 records of 3 metrics.
    let range = format!("start_time={}&end_time={}", ts(t0 + 5000), ts(t0 + 9000));
    let page = collector.json(&format!("/api/v1/gpus/GPU-a/telemetry?{range}"));
    assert_eq!(page["count"], 15);
    assert_eq!(timestamps(&page).first().unwrap(), &ts(t0 + 5000));
    assert_eq!(timestamps(&page).last().unwrap(), &ts(t0 + 9000));
    let one_ms_in = format!("start_time={}&end_time={}", ts(t0 + 5001), ts(t0 + 8999));
    assert_eq!(collector.json(&format!("/api/v1/gpus/GPU-a/telemetry?{one_ms_in}"))["count"], 9);

    let filtered = format!("/api/v1/gpus/GPU-a/telemetry?{range}&metric=DCGM_FI_DEV_GPU_UTIL&metric=DCGM_FI_DEV_GPU_TEMP");
    let page = collector.json(&filtered);
    assert_eq!(page["count"], 10);
    assert!(page["samples"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["metric"] != "DCGM_FI_DEV_POWER_USAGE"));

    // The last 3 records (9 samples) are in the 10-sample ring: served from the cache, and
    // equal to the same query read from the file.
    let recent = format!("start_time={}", ts(t0 + 17_000));
    let cached = collector.json(&format!("/api/v1/gpus/GPU-a/telemetry?{recent}"));
    assert_eq!((cached["source"].as_str(), cached["count"].as_u64()), (Some("cache"), Some(9)));
    let from_file: Vec<Value> = all["samples"].as_array().unwrap()[51..].to_vec();
    assert_eq!(cached["samples"].as_array().unwrap(), &from_file);

    // Pages of 7 walk all 60 samples once, in order, with no cursor after the last.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let path = match &cursor {
            Some(c) => format!("/api/v1/gpus/GPU-a/telemetry?limit=7&cursor={c}"),
            None => "/api/v1/gpus/GPU-a/telemetry?limit=7".to_string(),
        };
        let page = collector.json(&path);
        assert!(page["count"].as_u64().unwrap() <= 7);
        seen.extend(page["samples"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, all["samples"].as_array().unwrap().clone());

    let empty =
        collector.json(&format!("/api/v1/gpus/GPU-a/telemetry?start_time={}", ts(t0 + 60_000)));
    assert_eq!((empty["count"].as_u64(), empty["samples"].as_array().unwrap().len()), (Some(0), 0));
}

/// The six bad records are in `telemetry.dlq`.
fn check_dead_letters(broker: std::net::SocketAddr) {
    let client = Client::connect(&[broker], ClientConfig::default()).unwrap();
    let config = ConsumerConfig { start: StartPosition::Earliest, ..ConsumerConfig::default() };
    let mut dlq = client.subscribe("telemetry.dlq", "check", config).unwrap();
    let mut count = 0;
    let deadline = std::time::Instant::now() + PATIENCE;
    while count < 6 && std::time::Instant::now() < deadline {
        count += dlq.poll(Duration::from_millis(200)).unwrap().len();
    }
    assert_eq!(count, 6, "every bad record is dead-lettered, none dropped");
}

/// Goal: bad input never reaches storage and never gets a 500. Method: raw HTTP requests
/// (so paths arrive byte for byte) with traversal ids and bad parameters.
#[test]
fn bad_ids_and_parameters_get_400_unknown_gpus_404() {
    let broker = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let collector = Server::collector(broker.addr, dir.path(), &[]);
    publish(
        broker.addr,
        "telemetry",
        &[("GPU-a".into(), record("GPU-a", base_ms(), &[("A", 1.0)]))],
    );
    collector.wait_stats("1 stored", |s| s["records_stored"] == 1);

    for id in [
        "..%2Fx",
        "%2e%2e%2f",
        "%2e%2e",
        "%2Fetc%2Fpasswd",
        "a%00b",
        "a%5Cb",
        "%FF",
        &"a".repeat(129),
    ] {
        let (status, body) = collector.get(&format!("/api/v1/gpus/{id}/telemetry"));
        assert_eq!(status, 400, "{id}: {body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (error["status"].as_str(), error["errorType"].as_str()),
            (Some("error"), Some("bad_data"))
        );
        assert_eq!(error["param"], "gpu_id");
    }
    let (status, _) = collector.get("/api/v1/gpus/../x/telemetry");
    assert_eq!(status, 404, "an unnormalised .. matches no route");
    let (status, body) = collector.get("/api/v1/gpus/GPU-zzz/telemetry");
    assert_eq!(status, 404, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["errorType"], "not_found");

    // Past the query-string bound (60 KiB, more than any schema-valid query), within
    // hyper's URI bound (64 KiB).
    let long = "x=".to_string() + &"a".repeat(62_000);
    let bad = [
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("limit=1000000000000", "limit"),
        ("limit=100001", "limit"),
        ("limit=5&limit=6", "limit"),
        ("start_time=soon", "start_time"),
        ("end_time=2026-11-29", "end_time"),
        ("start_time=2026-11-29T10:00:00Z&end_time=2026-11-29T09:00:00Z", "start_time"),
        ("start_time=2026-11-29T09:00Z", "start_time"),
        ("cursor=nonsense", "cursor"),
        ("order=newest", "order"),
        ("metric=", "metric"),
        (long.as_str(), "query"),
    ];
    for (query, param) in bad {
        let (status, body) = collector.get(&format!("/api/v1/gpus/GPU-a/telemetry?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["param"], param, "{query}");
    }
    let (status, body) = collector.get("/no/such/path");
    assert_eq!(status, 404);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["status"], "error");
    assert_eq!(collector.get("/api/v1/gpus/GPU-a/telemetry?limit=100000").0, 200);
}

/// Goal: with `--http-token`, every path but `/health` needs the bearer token.
#[test]
fn a_configured_token_is_required() {
    let broker = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let collector = Server::collector(broker.addr, dir.path(), &["--http-token", "s3cret"]);
    let (status, body) = collector.get("/api/v1/gpus");
    assert_eq!(status, 401);
    assert!(!body.contains("s3cret"));
    assert_eq!(collector.get("/stats").0, 401);
    collector.wait_health(200);
}

/// Goal: slow clients and bursts do not starve the API. Method: 300 connections that send
/// half a request and stall, then 200 requests from 50 threads at once; every request must
/// be answered 200 while the stalled connections stay open.
#[test]
fn stalled_connections_and_bursts_leave_the_api_responsive() {
    use std::io::Write;
    let broker = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let collector = Server::collector(broker.addr, dir.path(), &[]);
    let stalled: Vec<std::net::TcpStream> = (0..300)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(collector.http).unwrap();
            s.write_all(b"GET /api/v1/gpus HTTP/1.1\r\nHost: x").unwrap();
            s
        })
        .collect();
    let addr = collector.http;
    let workers: Vec<_> = (0..50)
        .map(|_| {
            std::thread::spawn(move || {
                (0..4).map(|_| get(addr, "/api/v1/gpus").0).collect::<Vec<_>>()
            })
        })
        .collect();
    for worker in workers {
        assert!(worker.join().unwrap().iter().all(|s| *s == 200));
    }
    assert_eq!(collector.get("/stats").0, 200);
    drop(stalled);
}
