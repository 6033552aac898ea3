//! Crash safety with a real process: a child `mqd --fsync always` is killed with SIGKILL at
//! random moments while a producer publishes and a consumer group consumes, then restarted
//! on the same data directory. Afterwards every acknowledged record is present exactly once
//! at its offset, and the group, resuming from its committed offsets each time, has received
//! every acknowledged record (redeliveries allowed, losses not).
//!
//! `MQ_CRASH_ITERATIONS` sets the number of kills (default 20, the CI size); the long
//! variant is `MQ_CRASH_ITERATIONS=500 cargo test -p mq-broker --test crash -- --nocapture`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use mq_protocol::{Record, Request, Response};

type Acked = Arc<Mutex<BTreeMap<(u32, u64), String>>>;
type Seen = Arc<Mutex<BTreeSet<(u32, u64)>>>;

fn producer(addr: std::net::SocketAddr, next: Arc<AtomicU64>, acked: Acked, stop: Arc<AtomicBool>) {
    let mut c = Bin::connect(addr);
    while !stop.load(Ordering::SeqCst) {
        let first = next.fetch_add(20, Ordering::SeqCst);
        let values: Vec<String> = (first..first + 20).map(|i| format!("record-{i}")).collect();
        let records = values
            .iter()
            .map(|v| Record {
                key: Some(Bytes::from(format!("gpu-{}", v.len() % 7))),
                value: Bytes::from(v.clone()),
            })
            .collect();
        let id = c.send(&Request::Publish { topic: "t".into(), records });
        match c.recv_within(Duration::from_secs(5)) {
            Some((rid, Response::Published(placements))) if rid == id => {
                let mut acked = acked.lock().unwrap();
                for (p, v) in placements.iter().zip(values) {
                    acked.insert((p.partition, p.offset), v);
                }
            }
            _ => return,
        }
    }
}

fn consumer(addr: std::net::SocketAddr, seen: Seen, stop: Arc<AtomicBool>) {
    let mut c = Bin::connect(addr);
    let id = c.send(&subscribe("t", "g", 500));
    match c.recv_within(Duration::from_secs(5)) {
        Some((rid, Response::Subscribed { .. })) if rid == id => {}
        _ => return,
    }
    while !stop.load(Ordering::SeqCst) {
        let Some(deliver) = c.deliver_within(Duration::from_millis(50)) else { continue };
        seen.lock().unwrap().extend(deliver.records.iter().map(|d| (d.partition, d.offset)));
        // The broker is killed at random moments, possibly before `stop` is set: an ACK
        // that meets a reset connection ends this consumer (its records come again).
        if c.try_send(&ack_all("t", "g", &deliver.records)).is_err() {
            return;
        }
    }
}

#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_record() {
    let iterations: u64 =
        std::env::var("MQ_CRASH_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let args = [
        "--storage",
        "disk",
        "--data-dir",
        &data,
        "--fsync",
        "always",
        "--partitions",
        "4",
        "--segment-bytes",
        "2097152",
        "--checkpoint-ms",
        "50",
    ];
    let acked: Acked = Arc::default();
    let seen: Seen = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..iterations {
        let mut mqd = Mqd::spawn(&args);
        let stop = Arc::new(AtomicBool::new(false));
        let threads = [
            {
                let (a, n, s) = (acked.clone(), next.clone(), stop.clone());
                let addr = mqd.addr;
                std::thread::spawn(move || producer(addr, n, a, s))
            },
            {
                let (s2, s) = (seen.clone(), stop.clone());
                let addr = mqd.addr;
                std::thread::spawn(move || consumer(addr, s2, s))
            },
        ];
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(30 + rng % 200));
        mqd.child.kill().unwrap();
        mqd.child.wait().unwrap();
        stop.store(true, Ordering::SeqCst);
        for t in threads {
            t.join().unwrap();
        }
        eprintln!("kill {}: {} records acknowledged so far", i + 1, acked.lock().unwrap().len());
    }

    let mqd = Mqd::spawn(&args);
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 100, "the producer got work done between kills: {}", acked.len());

    // Every acknowledged record is present exactly once, at its offset.
    let mut reader = Bin::connect(mqd.addr);
    reader.call(&subscribe("t", "verify", 65_536));
    let mut log: BTreeMap<(u32, u64), String> = BTreeMap::new();
    let total: u64 = {
        let Response::Topics(json) = reader.call(&Request::Topics) else { panic!() };
        let topics: mq_protocol::admin::TopicsReply = serde_json::from_slice(&json).unwrap();
        topics.topics.iter().find(|t| t.name == "t").unwrap().records
    };
    while (log.len() as u64) < total {
        let d = reader
            .deliver_within(Duration::from_secs(10))
            .expect("the verifier reads the whole topic");
        for r in &d.records {
            log.insert((r.partition, r.offset), String::from_utf8(r.value.to_vec()).unwrap());
        }
        reader.send(&ack_all("t", "verify", &d.records));
    }
    for (place, value) in &acked {
        assert_eq!(
            log.get(place),
            Some(value),
            "acknowledged record at {place:?} is missing or changed"
        );
    }
    let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
    for v in log.values() {
        *counts.entry(v).or_default() += 1;
    }
    assert!(counts.values().all(|&c| c == 1), "a record is stored twice");

    // The group resumes from its committed offsets: draining it now completes what it saw.
    let mut c = Bin::connect(mqd.addr);
    c.call(&subscribe("t", "g", 65_536));
    loop {
        let Some(d) = c.deliver_within(Duration::from_millis(500)) else { break };
        seen.lock().unwrap().extend(d.records.iter().map(|r| (r.partition, r.offset)));
        c.send(&ack_all("t", "g", &d.records));
    }
    let seen = seen.lock().unwrap();
    let lost: Vec<_> = acked.keys().filter(|k| !seen.contains(k)).take(5).collect();
    assert!(lost.is_empty(), "the group never received acknowledged records, e.g. {lost:?}");
}

#[test]
fn a_second_broker_on_the_same_data_dir_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let _first = Mqd::spawn(&["--storage", "disk", "--data-dir", data]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mqd"))
        .args(["--listen", "127.0.0.1:0", "--storage", "disk", "--data-dir", data])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("locked by another mqd"), "{stderr}");
}

#[test]
fn a_graceful_restart_keeps_records_and_group_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let args = ["--storage", "disk", "--data-dir", data, "--partitions", "2"];
    let mut mqd = Mqd::spawn(&args);
    let mut c = Bin::connect(mqd.addr);
    c.call(&publish("t", (0..100).map(|i| format!("r{i}"))));
    c.call(&subscribe("t", "g", 1000));
    let got = c.collect(100, Duration::from_secs(5));
    assert_eq!(got.len(), 100);
    c.call(&ack_all("t", "g", &got[..60]));
    mqd.signal("TERM");
    assert_eq!(mqd.wait_within(Duration::from_secs(10)).unwrap().code(), Some(0));
    assert!(dir.path().join("clean_shutdown").exists(), "graceful stop writes the marker");

    let mqd = Mqd::spawn(&args);
    let mut c = Bin::connect(mqd.addr);
    let Response::Topics(json) = c.call(&Request::Topics) else { panic!() };
    let topics: mq_protocol::admin::TopicsReply = serde_json::from_slice(&json).unwrap();
    assert_eq!(topics.topics[0].records, 100);
    c.call(&subscribe("t", "g", 1000));
    let again = c.collect(100, Duration::from_secs(2));
    let unacked: BTreeSet<_> = got[60..].iter().map(|d| (d.partition, d.offset)).collect();
    let redelivered: BTreeSet<_> = again.iter().map(|d| (d.partition, d.offset)).collect();
    assert_eq!(redelivered, unacked, "only what was not acknowledged comes back");
    assert!(again.iter().all(|d| d.attempt == 2), "delivery counts survive the restart");
}

#[test]
fn every_fsync_mode_serves_and_survives_a_kill() {
    for mode in ["always", "interval:50", "never"] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_str().unwrap();
        let args = ["--storage", "disk", "--data-dir", data, "--fsync", mode, "--partitions", "2"];
        let mut mqd = Mqd::spawn(&args);
        let mut c = Bin::connect(mqd.addr);
        let reply = c.call(&publish("t", (0..500).map(|i| format!("r{i}"))));
        assert!(matches!(reply, Response::Published(ref p) if p.len() == 500), "{mode}: {reply:?}");
        c.call(&subscribe("t", "g", 1000));
        assert_eq!(c.collect(500, Duration::from_secs(5)).len(), 500, "{mode}");
        std::thread::sleep(Duration::from_millis(120));
        mqd.child.kill().unwrap();
        mqd.child.wait().unwrap();
        let mqd = Mqd::spawn(&args);
        let mut c = Bin::connect(mqd.addr);
        let Response::Topics(json) = c.call(&Request::Topics) else { panic!() };
        let topics: mq_protocol::admin::TopicsReply = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            topics.topics[0].records, 500,
            "{mode}: a killed process loses nothing acknowledged"
        );
    }
}
