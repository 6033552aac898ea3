//! The streamer against a real broker (in-process, on 127.0.0.1): sharding across three
//! instances publishes every row exactly once, each GPU's rows in file order; a broker
//! restart mid-stream, or a broker that is down at start, loses nothing; SIGTERM drains and
//! exits 0, or reports what stayed unacknowledged (RELIABILITY.md C2, C3); a record too
//! large for the broker is a per-row error.

mod streamer_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mq_broker::config::Config;
use mq_broker::event_loop::Running;
use streamer_support::*;

const EXIT_WITHIN: Duration = Duration::from_secs(30);

#[test]
fn three_shards_publish_every_row_exactly_once_and_each_gpus_rows_in_file_order() {
    let broker = memory_broker();
    let addr = broker.addr.to_string();
    let dir = temp_dir();
    let csv = numbered_csv(dir.path(), 3000, 24);
    let children: Vec<_> = (0..3)
        .map(|i| {
            let shard = format!("{i}/3");
            spawn_streamer(&[
                "--addr",
                &addr,
                "--topic",
                "shards",
                "--file",
                csv.to_str().unwrap(),
                "--shard",
                &shard,
                "--workers",
                "2",
            ])
        })
        .collect();
    let mut read = 0;
    for child in children {
        let (code, stderr) = wait_for(child, EXIT_WITHIN);
        assert_eq!(code, 0, "{stderr}");
        let rows = summary_count(&stderr, "rows read");
        assert_eq!(summary_count(&stderr, "records acked"), rows, "{stderr}");
        read += rows;
    }
    assert_eq!(read, 3000, "the shards read every row once between them");
    let stored = read_topic(&addr, "shards", 3000, Duration::from_secs(20));
    let counts = seq_counts(&stored);
    assert_eq!(counts.len(), 3000, "every row arrived");
    assert!(counts.values().all(|&n| n == 1), "no row twice");
    // Sharding is by GPU, so each GPU's rows come from one instance and reach the broker
    // in file order: within its partition, a GPU's `seq` values only grow.
    let mut last: BTreeMap<String, (u32, u64)> = BTreeMap::new();
    let mut sorted = stored.clone();
    sorted.sort_by_key(|s| (s.partition, s.offset));
    for s in &sorted {
        assert_eq!(s.key, s.record.uuid, "the key is the GPU id");
        let seq = s.record.metrics["seq"] as u64;
        if let Some((partition, prev)) = last.insert(s.key.clone(), (s.partition, seq)) {
            assert_eq!(partition, s.partition, "one GPU, one partition");
            assert!(prev < seq, "{} out of order: {prev} then {seq}", s.key);
        }
    }
    assert_eq!(last.len(), 24, "every GPU arrived");
}

#[test]
fn a_broker_restart_mid_stream_loses_nothing() {
    let _ = env_logger::builder().is_test(true).try_init();
    let data = temp_dir();
    let addr = free_addr();
    let broker = Running::start(Config::disk(addr, data.path())).expect("broker starts");
    let dir = temp_dir();
    let rows = 6000;
    let csv = numbered_csv(dir.path(), rows, 32);
    let addr_text = addr.to_string();
    let child = spawn_streamer(&[
        "--addr",
        &addr_text,
        "--topic",
        "restart",
        "--file",
        csv.to_str().unwrap(),
        "--workers",
        "2",
        "--rate",
        "1500",
    ]);
    std::thread::sleep(Duration::from_millis(700));
    broker.stop().expect("a clean stop");
    // Longer than the client's own reconnect window (2 s), so the worker's retry runs too.
    std::thread::sleep(Duration::from_millis(2500));
    let broker = Running::start(Config::disk(addr, data.path())).expect("broker restarts");
    let (code, stderr) = wait_for(child, EXIT_WITHIN);
    println!("{stderr}");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(summary_count(&stderr, "records acked"), rows, "{stderr}");
    assert!(!stderr.contains("unacknowledged"), "{stderr}");
    let stored = read_topic(&addr_text, "restart", rows as usize, Duration::from_secs(20));
    let counts = seq_counts(&stored);
    let missing: Vec<u64> = (0..rows).filter(|i| !counts.contains_key(i)).collect();
    assert!(missing.is_empty(), "rows lost: {:?}", &missing[..missing.len().min(20)]);
    let duplicates = counts.values().filter(|&&n| n > 1).count();
    println!("{} records stored for {rows} rows ({duplicates} rows twice)", stored.len());
    drop(broker);
}

#[test]
fn a_broker_that_is_down_at_start_is_waited_for() {
    let addr = free_addr();
    let addr_text = addr.to_string();
    let dir = temp_dir();
    let csv = numbered_csv(dir.path(), 500, 8);
    let child =
        spawn_streamer(&["--addr", &addr_text, "--topic", "late", "--file", csv.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(1200));
    let broker = Running::start(Config::memory(addr)).expect("broker starts");
    let (code, stderr) = wait_for(child, EXIT_WITHIN);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("connection refused"), "the wait was reported: {stderr}");
    let stored = read_topic(&addr_text, "late", 500, Duration::from_secs(20));
    assert_eq!(seq_counts(&stored).len(), 500);
    drop(broker);
}

#[test]
fn sigterm_drains_what_was_read_and_exits_zero() {
    let broker = memory_broker();
    let addr = broker.addr.to_string();
    let dir = temp_dir();
    let csv = numbered_csv(dir.path(), 1000, 16);
    let child = spawn_streamer(&[
        "--addr",
        &addr,
        "--topic",
        "term",
        "--file",
        csv.to_str().unwrap(),
        "--loop",
        "--rate",
        "2000",
        "--workers",
        "2",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    let signalled = Instant::now();
    signal(&child, "TERM");
    let (code, stderr) = wait_for(child, EXIT_WITHIN);
    assert_eq!(code, 0, "{stderr}");
    assert!(signalled.elapsed() < Duration::from_secs(5), "drained in {:?}", signalled.elapsed());
    assert!(!stderr.contains("unacknowledged"), "{stderr}");
    let acked = summary_count(&stderr, "records acked");
    assert!(acked > 1000, "it ran a while: {stderr}");
    let stored = read_topic(&addr, "term", acked as usize, Duration::from_secs(20));
    assert_eq!(stored.len() as u64, acked, "the topic holds exactly what was acknowledged");
}

#[test]
fn sigterm_with_the_broker_gone_reports_the_unacknowledged_records() {
    let broker = memory_broker();
    let addr = broker.addr.to_string();
    let dir = temp_dir();
    let csv = numbered_csv(dir.path(), 1000, 16);
    let child = spawn_streamer(&[
        "--addr",
        &addr,
        "--topic",
        "gone",
        "--file",
        csv.to_str().unwrap(),
        "--loop",
        "--rate",
        "2000",
        "--drain-timeout-ms",
        "500",
    ]);
    std::thread::sleep(Duration::from_millis(800));
    broker.stop().expect("a clean stop");
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    signal(&child, "TERM");
    let (code, stderr) = wait_for(child, EXIT_WITHIN);
    assert_eq!(code, 1, "{stderr}");
    assert!(signalled.elapsed() < Duration::from_secs(8), "gave up in {:?}", signalled.elapsed());
    assert!(stderr.contains("records unacknowledged"), "{stderr}");
}

#[test]
fn a_record_too_large_for_the_broker_fails_alone() {
    let broker = memory_broker();
    let addr = broker.addr.to_string();
    let dir = temp_dir();
    let huge = "x".repeat(1100 * 1024);
    let text = format!("uuid,note,seq\nGPU-1,small,0\nGPU-1,{huge},1\nGPU-1,small,2\n");
    let csv = write_file(dir.path(), "huge.csv", text.as_bytes());
    let out = run_streamer(&[
        "--addr",
        &addr,
        "--topic",
        "big",
        "--file",
        csv.to_str().unwrap(),
        "--max-row-bytes",
        "4000000",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(summary_count(&stderr, "too large"), 1, "{stderr}");
    assert_eq!(summary_count(&stderr, "records acked"), 2, "{stderr}");
    assert!(stderr.contains("line 3: not sent"), "{stderr}");
}

#[test]
fn rate_is_the_streamers_total_whatever_the_worker_count() {
    // 4 workers at --rate 200 for 2 s: about 200/s all together (448 seen: the reading
    // stops a little after 2 s and the bucket starts with a burst). Before, each worker had
    // the whole rate: about 1,600 in 2 s.
    let broker = memory_broker();
    let addr = broker.addr.to_string();
    let dir = temp_dir();
    let csv = numbered_csv(dir.path(), 1000, 32);
    let out = run_streamer(&[
        "--addr",
        &addr,
        "--topic",
        "paced",
        "--file",
        csv.to_str().unwrap(),
        "--loop",
        "--rate",
        "200",
        "--workers",
        "4",
        "--duration",
        "2",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let acked = summary_count(&stderr, "records acked");
    assert!(acked > 0, "{stderr}");
    assert!(acked <= 500, "--rate 200 over 2 s acked {acked}: {stderr}");
}

#[test]
fn a_second_signal_abandons_the_drain_and_still_prints_the_summary() {
    let broker = memory_broker();
    let addr = broker.addr.to_string();
    let dir = temp_dir();
    let csv = numbered_csv(dir.path(), 1000, 16);
    let child = spawn_streamer(&[
        "--addr",
        &addr,
        "--topic",
        "twice",
        "--file",
        csv.to_str().unwrap(),
        "--loop",
        "--rate",
        "2000",
        "--drain-timeout-ms",
        "60000",
    ]);
    std::thread::sleep(Duration::from_millis(800));
    broker.stop().expect("a clean stop");
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "INT");
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    signal(&child, "INT");
    let (code, stderr) = wait_for(child, EXIT_WITHIN);
    assert_eq!(code, 1, "{stderr}");
    assert!(signalled.elapsed() < Duration::from_secs(20), "ended {:?} after", signalled.elapsed());
    assert!(stderr.contains("stopping: waiting up to 60.0 s"), "{stderr}");
    assert!(stderr.contains("second signal: abandoning"), "{stderr}");
    assert!(stderr.contains("telemetry-streamer summary after"), "{stderr}");
    assert!(stderr.contains("records unacknowledged"), "{stderr}");
}
