//! Retention through the real binary: samples older than `--retention-hours` leave the
//! disk, the API, `/stats` and `/metrics` say what was deleted, a record already too old is
//! acknowledged without being stored, and 0 keeps everything.

mod collector_support;

use std::collections::BTreeSet;

use collector_support::*;

const H: i64 = 3_600_000;

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn files(dir: &std::path::Path) -> BTreeSet<String> {
    gpu_files(dir)
}

fn bytes_on_disk(dir: &std::path::Path) -> u64 {
    gpu_files(dir).iter().map(|f| std::fs::metadata(dir.join("gpus").join(f)).unwrap().len()).sum()
}

/// Goal: what operators rely on. Method: store samples 10 h, 5 h and 30 min old with
/// retention off; restart with 3 hours (the run at start deletes the two old hours, and
/// the GPU that had only old samples); check disk, API, counters, metrics and the log;
/// send a record that is already too old and a fresh one; restart from a config file
/// with `retention_hours = 0` and store a 100-hour-old sample that then stays.
#[test]
fn expired_hours_are_deleted_and_zero_keeps_everything() {
    let broker = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let (old, older, recent) = (now - 10 * H, now - 5 * H, now - 30 * 60_000);
    let collector = Server::collector(broker.addr, dir.path(), &["--retention-hours", "0"]);
    let first = [
        ("GPU-old", old, 1.0),
        ("GPU-new", old, 2.0),
        ("GPU-new", older, 3.0),
        ("GPU-new", recent, 4.0),
    ];
    let records: Vec<(String, String)> = first
        .iter()
        .map(|(gpu, ts, v)| (gpu.to_string(), record(gpu, *ts, &[("A", *v)])))
        .collect();
    publish(broker.addr, "telemetry", &records);
    let stats = collector.wait_stats("4 stored", |s| s["records_stored"] == 4);
    assert_eq!(
        (stats["retention"]["runs"].as_u64(), stats["retention"]["hours"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(files(dir.path()).len(), 4, "{:?}", files(dir.path()));
    assert_eq!(collector.terminate(), Some(0));

    let collector = Server::collector(broker.addr, dir.path(), &["--retention-hours", "3"]);
    let stats =
        collector.wait_stats("the run at start", |s| s["retention"]["runs"].as_u64() >= Some(1));
    let kept: BTreeSet<String> = [format!("{}/GPU-new.jsonl", hour_name(recent))].into();
    assert_eq!(files(dir.path()), kept, "the hours of 10 h and 5 h ago are gone");
    let retention = &stats["retention"];
    assert_eq!(retention["hours"], 3);
    assert_eq!(retention["samples_removed"], 3);
    assert_eq!(retention["files_removed"], 3);
    assert_eq!(retention["gpus_removed"], 1);
    assert!(retention["bytes_removed"].as_u64().unwrap() > 0);
    assert!(retention["last_run"].is_string() && retention["visible_from"].is_string());
    assert_eq!(stats["stored_bytes"].as_u64(), Some(bytes_on_disk(dir.path())));

    let gpus = collector.json("/api/v1/gpus");
    assert_eq!(gpus["count"], 1, "{gpus}");
    assert_eq!(
        (gpus["gpus"][0]["uuid"].as_str(), gpus["gpus"][0]["sample_count"].as_u64()),
        (Some("GPU-new"), Some(1))
    );
    assert_eq!(collector.get("/api/v1/gpus/GPU-old/telemetry").0, 404, "gone with its samples");
    let page = collector.json("/api/v1/gpus/GPU-new/telemetry");
    assert_eq!(page["count"], 1);
    assert_eq!(page["samples"][0]["timestamp"], ts(recent).as_str());
    let (_, metrics) = collector.get("/metrics");
    assert!(metrics.contains("\ncollector_retention_samples_removed_total 3\n"), "{metrics}");
    assert!(metrics.contains("\ncollector_retention_gpus_removed_total 1\n"));
    assert!(metrics.contains("\ncollector_retention_last_run_timestamp_seconds "));
    assert!(metrics.contains("\ncollector_stored_bytes "));
    assert!(!metrics.contains("GPU-old"), "its latest values went with it");
    let log = collector.log_text();
    assert!(
        log.lines().any(|l| l.contains("retention: deleted 2 hour directories") && l.contains("3 samples")),
        "{log}"
    );

    let late = [
        ("GPU-new".to_string(), record("GPU-new", old, &[("A", 5.0)])),
        ("GPU-new".to_string(), record("GPU-new", now_ms(), &[("A", 6.0)])),
    ];
    publish(broker.addr, "telemetry", &late);
    let stats = collector.wait_stats("one expired, one stored", |s| {
        s["records_expired"] == 1 && s["records_stored"] == 1
    });
    assert_eq!(stats["retention"]["samples_removed"], 3);
    assert_eq!(collector.json("/api/v1/gpus/GPU-new/telemetry")["count"], 2);
    assert!(!files(dir.path()).iter().any(|f| f.starts_with(&hour_name(old))), "not written");
    assert_eq!(collector.terminate(), Some(0));

    let config = dir.path().join("collector.toml");
    std::fs::write(&config, "retention_hours = 0\n").unwrap();
    let config = config.display().to_string();
    let collector = Server::collector(broker.addr, dir.path(), &["--config", &config]);
    let ancient = now - 100 * H;
    publish(
        broker.addr,
        "telemetry",
        &[("GPU-new".into(), record("GPU-new", ancient, &[("A", 7.0)]))],
    );
    let stats = collector.wait_stats("stored", |s| s["records_stored"] == 1);
    assert_eq!(stats["retention"]["runs"], 0, "0 never runs");
    assert_eq!(stats["retention"]["hours"], 0);
    assert!(stats["retention"]["visible_from"].is_null());
    let page = collector.json("/api/v1/gpus/GPU-new/telemetry");
    assert_eq!(page["count"], 3);
    assert_eq!(page["samples"][0]["timestamp"], ts(ancient).as_str());
    assert_eq!(collector.terminate(), Some(0));
}

/// Goal: a bad retention setting is a usage error, not a surprise at run time.
#[test]
fn an_absurd_retention_is_refused() {
    let out = std::process::Command::new(COLLECTOR)
        .args(["--retention-hours", "99999999", "--http", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("retention_hours"));
}
