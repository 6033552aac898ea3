//! Crash safety of the collector: `kill -9` in the middle of a stream, then a restart on
//! the same data directory, and a SIGTERM at the end. Every record the broker counts as
//! acknowledged must be stored exactly once.

mod collector_support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use collector_support::*;

const RECORDS: u64 = 12_000;
const GPUS: u64 = 8;

/// Goal: no acknowledged record is lost or stored twice across a kill -9. Method: a
/// publisher streams 12,000 records (8 GPUs, 2 metrics each) while a collector with small
/// batches stores them; the collector is killed with SIGKILL a few thousand records in,
/// restarted on the same directory, and stopped with SIGTERM once the group's lag is 0.
/// Then the JSONL files must hold each (partition, offset, metric) exactly once, for every
/// record.
#[test]
fn kill_9_mid_stream_then_restart_stores_every_record_once() {
    let broker = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let small = ["--batch-max", "64", "--credit", "256"];
    let first = Server::collector(broker.addr, dir.path(), &small);
    let addr = broker.addr;
    let publisher = std::thread::spawn(move || {
        for chunk in 0..(RECORDS / 500) {
            let records: Vec<(String, String)> = (chunk * 500..(chunk + 1) * 500)
                .map(|i| {
                    let gpu = format!("GPU-{}", i % GPUS);
                    let json = record(&gpu, base_ms() + i as i64, &[("A", i as f64), ("B", 1.0)]);
                    (gpu, json)
                })
                .collect();
            publish(addr, "telemetry", &records);
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    first.wait_stats("some records stored", |s| s["records_stored"].as_u64().unwrap() >= 2000);
    first.kill9();
    let second = Server::collector(broker.addr, dir.path(), &small);
    publisher.join().unwrap();
    let deadline = Instant::now() + PATIENCE;
    while group_state(broker.addr, "collectors", "telemetry").0 != 0 {
        assert!(Instant::now() < deadline, "lag never reached 0\n{}", second.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = second.json("/stats");
    eprintln!(
        "after restart: {stats}\n{}",
        second
            .log_text()
            .lines()
            .filter(|l| l.contains("cut") || l.contains("storage:"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(second.terminate(), Some(0), "a graceful stop exits 0");

    let lines = stored_lines(dir.path());
    let unique: HashSet<_> = lines.iter().collect();
    assert_eq!(unique.len(), lines.len(), "a sample stored twice");
    let records: HashSet<(u64, u64)> = lines.iter().map(|(_, p, o, _)| (*p, *o)).collect();
    assert_eq!(records.len() as u64, RECORDS, "every record stored; stats after restart {stats}");
    assert_eq!(lines.len() as u64, RECORDS * 2);
    for (gpu, _, _, _) in &lines {
        assert!(gpu.starts_with("GPU-"));
    }
}

/// Goal: SIGTERM stops consuming, stores and acknowledges what is in flight, and exits 0;
/// a restart then finds nothing left to do. Method: stop a collector right after a burst,
/// restart it, and check the group's lag and the stored count.
#[test]
fn sigterm_finishes_the_batches_in_flight() {
    let broker = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let collector = Server::collector(broker.addr, dir.path(), &[]);
    collector.wait_health(200);
    let records: Vec<(String, String)> = (0..3000)
        .map(|i| ("GPU-x".to_string(), record("GPU-x", base_ms() + i, &[("A", 1.0)])))
        .collect();
    publish(broker.addr, "telemetry", &records);
    collector.wait_stats("some stored", |s| s["records_stored"].as_u64().unwrap() > 0);
    assert_eq!(collector.terminate(), Some(0));
    let (lag_after_stop, _) = group_state(broker.addr, "collectors", "telemetry");
    let stored_after_stop = stored_lines(dir.path()).len() as u64;
    assert_eq!(stored_after_stop + lag_after_stop, 3000, "stored, or still in the group's lag");

    let again = Server::collector(broker.addr, dir.path(), &[]);
    let stats = again
        .wait_stats("the rest stored", |s| s["records_stored"].as_u64().unwrap() == lag_after_stop);
    assert_eq!(stats["records_duplicate"], 0, "nothing acknowledged came back");
    assert_eq!(stored_lines(dir.path()).len(), 3000);
}
