//! Several collectors in one group, and the gateway over them: the GPUs are split between
//! the collectors, the gateway shows all of them, routes each GPU's query to the collector
//! that holds it, and merges the pages of a GPU that two collectors hold.

mod collector_support;

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use collector_support::*;
use serde_json::Value;

const GPUS: usize = 32;

fn burst(round: i64) -> Vec<(String, String)> {
    let mut records = Vec::new();
    for i in 0..5 {
        for g in 0..GPUS {
            let gpu = format!("GPU-{g:02}");
            let ts = base_ms() + round * 10_000 + i * 1000;
            records.push((gpu.clone(), record(&gpu, ts, &[("DCGM_FI_DEV_GPU_UTIL", i as f64)])));
        }
    }
    records
}

fn gpu_ids(server: &Server) -> BTreeSet<String> {
    let list = server.json("/api/v1/gpus");
    list["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["uuid"].as_str().unwrap().to_string())
        .collect()
}

#[track_caller]
fn wait_members(broker: std::net::SocketAddr, members: u32) {
    let deadline = Instant::now() + PATIENCE;
    while group_state(broker, "collectors", "telemetry").1 != members {
        assert!(Instant::now() < deadline, "the group never had {members} members");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Walks every page of `path` with `limit` and returns the samples.
fn all_pages(server: &Server, path: &str, limit: usize) -> Vec<Value> {
    let mut samples = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let url = match &cursor {
            Some(c) => format!("{path}?limit={limit}&cursor={c}"),
            None => format!("{path}?limit={limit}"),
        };
        let page = server.json(&url);
        samples.extend(page["samples"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return samples,
        }
    }
    panic!("too many pages");
}

/// Goal: two collectors split the GPUs, the gateway serves all of them, and after a
/// collector leaves and comes back each keeps serving what it stored, with the gateway
/// merging a GPU held by both. Method: publish 32 GPUs with both collectors in the group;
/// stop one (SIGTERM) and publish again (the other takes everything); restart the first on
/// its directory; query through a gateway over both.
#[test]
fn two_collectors_split_the_gpus_and_the_gateway_shows_all() {
    let broker = start_broker();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Server::collector(broker.addr, dir_a.path(), &[]);
    let b = Server::collector(broker.addr, dir_b.path(), &[]);
    a.wait_health(200);
    b.wait_health(200);
    wait_members(broker.addr, 2);
    publish(broker.addr, "telemetry", &burst(0));
    let stored = |s: &Server| s.json("/stats")["records_stored"].as_u64().unwrap();
    let deadline = Instant::now() + PATIENCE;
    while stored(&a) + stored(&b) < (GPUS * 5) as u64 {
        assert!(Instant::now() < deadline, "not all stored");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (on_a, on_b) = (gpu_ids(&a), gpu_ids(&b));
    assert!(!on_a.is_empty() && !on_b.is_empty(), "both collectors got GPUs: {on_a:?} {on_b:?}");
    assert!(on_a.is_disjoint(&on_b), "a GPU is on one collector");
    assert_eq!(on_a.len() + on_b.len(), GPUS);

    let gateway = Server::gateway(&[&a, &b]);
    assert_eq!(gateway.json("/api/v1/gpus")["count"], GPUS);
    for gpu in [on_a.first().unwrap(), on_b.first().unwrap()] {
        let path = format!("/api/v1/gpus/{gpu}/telemetry");
        let direct = if on_a.contains(gpu) { a.json(&path) } else { b.json(&path) };
        assert_eq!(gateway.json(&path), direct, "routed to the holder");
    }
    let health = gateway.json("/health");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["collectors"].as_array().unwrap().len(), 2);
    let stats = gateway.json("/stats");
    assert_eq!(stats["collectors"].as_array().unwrap().len(), 2);
    let (status, metrics) = gateway.get("/metrics");
    assert_eq!(status, 200);
    assert!(metrics
        .contains(&format!("collector_records_stored_total{{collector=\"http://{}\"}}", a.http)));
    assert_eq!(metrics.matches("# TYPE DCGM_FI_DEV_GPU_UTIL gauge").count(), 1);
    assert_eq!(gateway.get("/api/v1/gpus/GPU-none/telemetry").0, 404);
    assert_eq!(gateway.get("/api/v1/gpus/..%2Fx/telemetry").0, 400);
    assert_eq!(
        gateway.get(&format!("/api/v1/gpus/{}/telemetry?limit=0", on_a.first().unwrap())).0,
        400
    );
    drop(gateway);

    // B leaves; A takes every partition and stores the next burst of all 32 GPUs.
    assert_eq!(b.terminate(), Some(0));
    wait_members(broker.addr, 1);
    publish(broker.addr, "telemetry", &burst(1));
    a.wait_stats("A stored the second burst", |s| {
        s["records_stored"].as_u64().unwrap() == (on_a.len() * 5 + GPUS * 5) as u64
    });
    let b = Server::collector(broker.addr, dir_b.path(), &[]);
    assert_eq!(gpu_ids(&b), on_b, "B serves what it stored before");

    let gateway = Server::gateway(&[&a, &b]);
    assert_eq!(gateway.json("/api/v1/gpus")["count"], GPUS);
    let shared_gpu = on_b.first().unwrap();
    let path = format!("/api/v1/gpus/{shared_gpu}/telemetry");
    let merged = gateway.json(&path);
    assert_eq!((merged["count"].as_u64(), merged["source"].as_str()), (Some(10), Some("merged")));
    let paged = all_pages(&gateway, &path, 3);
    assert_eq!(&paged, merged["samples"].as_array().unwrap(), "merged pages walk all samples once");
    let times: HashSet<&str> = paged.iter().map(|s| s["timestamp"].as_str().unwrap()).collect();
    assert_eq!(times.len(), 10);

    drop(b);
    let deadline = Instant::now() + PATIENCE;
    while gateway.get("/health").0 != 503 {
        assert!(Instant::now() < deadline, "the gateway never saw B gone");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(gateway.json_any("/health")["status"], "degraded");
}
