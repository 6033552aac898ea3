//! `order=desc` on `/api/v1/gpus/{gpu_id}/telemetry`: the latest samples first, cursors
//! that walk backwards, from the cache, from the files (several blocks in two hour files)
//! and through a gateway merging two collectors that hold some of the same samples.
//!
//! Real processes: an in-process broker, collectors and a gateway on `127.0.0.1:0`. The
//! expected answers are the ascending walk reversed, and the samples published.

mod collector_support;

use collector_support::*;
use serde_json::Value;

const GPU: &str = "GPU-order-0";
/// Records per collector topic; 3 metrics each, so 1200 samples: several blocks of the
/// file's time index (256 lines each), across an hour boundary (see `base_ms`).
const RECORDS: i64 = 400;

/// Records of `GPU` at `base_ms() + first*50 ms` onward, 50 ms apart.
fn records(first: i64, count: i64) -> Vec<(String, String)> {
    (first..first + count)
        .map(|k| {
            let metrics =
                [("UTIL", k as f64), ("TEMP", 40.0 + k as f64), ("POWER", 2.0 * k as f64)];
            (GPU.to_string(), record(GPU, base_ms() + k * 50, &metrics))
        })
        .collect()
}

fn samples(page: &Value) -> Vec<Value> {
    page["samples"].as_array().unwrap().clone()
}

/// Every sample of `query`, walking the cursors with pages of `limit`; also checks each
/// page's size and that a cursor comes exactly when more samples follow.
fn walk(server: &Server, query: &str, limit: usize) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let path = match &cursor {
            Some(c) => format!("/api/v1/gpus/{GPU}/telemetry?{query}&limit={limit}&cursor={c}"),
            None => format!("/api/v1/gpus/{GPU}/telemetry?{query}&limit={limit}"),
        };
        let page = server.json(&path);
        let got = samples(&page);
        assert!(got.len() <= limit, "{path}");
        seen.extend(got);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return seen,
        }
    }
    panic!("{query}: the cursors never ended");
}

fn reversed(mut samples: Vec<Value>) -> Vec<Value> {
    samples.reverse();
    samples
}

/// Goal: on one collector, `order=desc` gives the newest samples first, and walking its
/// cursors gives exactly the ascending walk reversed, from the files (all time, several
/// blocks in two files) and from the cache (a recent window), with a metric filter and
/// a window; a cursor from an ascending page continues backwards from the same place.
/// Method: 1200 samples on a collector with a 30-sample cache; compare the walks.
#[test]
fn descending_pages_walk_the_ascending_order_backwards() {
    let broker = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let collector = Server::collector(broker.addr, dir.path(), &["--cache-samples-per-gpu", "30"]);
    publish(broker.addr, "telemetry", &records(0, RECORDS));
    collector.wait_stats("all stored", |s| s["records_stored"] == RECORDS);

    let all = samples(&collector.json(&format!("/api/v1/gpus/{GPU}/telemetry?limit=100000")));
    assert_eq!(all.len(), 3 * RECORDS as usize);

    // The question of issue 13: the latest three, not the oldest.
    let latest = collector.json(&format!("/api/v1/gpus/{GPU}/telemetry?limit=3&order=desc"));
    assert_eq!(latest["source"], "file", "all time: more than the cache holds");
    assert_eq!(samples(&latest), reversed(all[all.len() - 3..].to_vec()));
    assert_eq!(samples(&latest)[0]["timestamp"], ts(base_ms() + (RECORDS - 1) * 50));
    let oldest = collector.json(&format!("/api/v1/gpus/{GPU}/telemetry?limit=3"));
    assert_eq!(samples(&oldest), all[..3].to_vec(), "the default stays ascending");

    for limit in [1, 7, 256, 1000] {
        assert_eq!(walk(&collector, "order=desc", limit), reversed(all.clone()), "limit {limit}");
    }
    let util: Vec<Value> = all.iter().filter(|s| s["metric"] == "UTIL").cloned().collect();
    assert_eq!(walk(&collector, "order=desc&metric=UTIL", 50), reversed(util));

    // A window: seconds 4 to 12, inclusive.
    let (from, to) = (base_ms() + 4000, base_ms() + 12_000);
    let window = format!("start_time={}&end_time={}", ts(from), ts(to));
    let inside: Vec<Value> = all
        .iter()
        .filter(|s| {
            let t = s["timestamp"].as_str().unwrap();
            t >= ts(from).as_str() && t <= ts(to).as_str()
        })
        .cloned()
        .collect();
    assert_eq!(inside.len(), 3 * 161);
    assert_eq!(walk(&collector, &format!("{window}&order=desc"), 40), reversed(inside.clone()));
    assert_eq!(walk(&collector, &window, 40), inside);

    // The last 8 records are in the 30-sample ring: the same answer, from the cache.
    let recent = format!("start_time={}", ts(base_ms() + (RECORDS - 8) * 50));
    let cached =
        collector.json(&format!("/api/v1/gpus/{GPU}/telemetry?{recent}&order=desc&limit=5"));
    assert_eq!(cached["source"], "cache");
    assert_eq!(samples(&cached), reversed(all[all.len() - 5..].to_vec()));
    let tail = reversed(all[all.len() - 24..].to_vec());
    assert_eq!(walk(&collector, &format!("{recent}&order=desc"), 5), tail);

    // A cursor is a position: from the 100th sample's, ascending goes on after it and
    // descending before it.
    let first = collector.json(&format!("/api/v1/gpus/{GPU}/telemetry?limit=100"));
    let cursor = first["next_cursor"].as_str().unwrap();
    let path =
        |order: &str| format!("/api/v1/gpus/{GPU}/telemetry?limit=4&order={order}&cursor={cursor}");
    assert_eq!(samples(&collector.json(&path("asc"))), all[100..104].to_vec());
    assert_eq!(samples(&collector.json(&path("desc"))), reversed(all[95..99].to_vec()));
}

/// Goal: through a gateway over two collectors that hold some of the same samples,
/// `order=desc` pages are the union's newest first, each sample once, and the gateway's
/// cursors walk the union backwards as they walk it forwards. Method: both collectors'
/// topics get the same records (the same samples, as a redelivery gives), then each gets
/// records of its own, some later than all the other's.
#[test]
fn the_gateway_merges_descending_pages() {
    let broker = start_broker();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Server::collector(broker.addr, dir_a.path(), &["--topic", "ta", "--group", "ga"]);
    let b = Server::collector(broker.addr, dir_b.path(), &["--topic", "tb", "--group", "gb"]);
    publish(broker.addr, "ta", &records(0, 100));
    publish(broker.addr, "tb", &records(0, 100));
    publish(broker.addr, "ta", &records(100, 50));
    publish(broker.addr, "tb", &records(150, 80));
    a.wait_stats("A stored", |s| s["records_stored"] == 150);
    b.wait_stats("B stored", |s| s["records_stored"] == 180);
    let gateway = Server::gateway(&[&a, &b]);

    let ascending = walk(&gateway, "order=asc", 100_000);
    let direct =
        |c: &Server| samples(&c.json(&format!("/api/v1/gpus/{GPU}/telemetry?limit=100000")));
    let (held_a, held_b) = (direct(&a), direct(&b));
    assert_eq!((held_a.len(), held_b.len()), (450, 540));
    // A's samples before 100 are B's too (same partitions and offsets): the union is
    // A's from 100 on, and all of B's.
    let mut union: Vec<Value> = held_b.clone();
    union.extend(held_a.iter().filter(|s| s["value"].as_f64().unwrap() >= 100.0).cloned());
    let key = |s: &Value| {
        (
            s["timestamp"].as_str().unwrap().to_string(),
            s["partition"].as_u64(),
            s["offset"].as_u64(),
            s["metric"].as_str().unwrap().to_string(),
        )
    };
    union.sort_by_key(key);
    union.dedup_by_key(|s| key(s));
    assert_eq!(ascending.len(), union.len());
    assert_eq!(
        ascending.iter().map(key).collect::<Vec<_>>(),
        union.iter().map(key).collect::<Vec<_>>()
    );

    let latest = gateway.json(&format!("/api/v1/gpus/{GPU}/telemetry?limit=3&order=desc"));
    assert_eq!(latest["source"], "merged");
    assert_eq!(samples(&latest), reversed(ascending[ascending.len() - 3..].to_vec()));
    for limit in [1, 13, 200] {
        assert_eq!(
            walk(&gateway, "order=desc", limit),
            reversed(ascending.clone()),
            "limit {limit}"
        );
        assert_eq!(walk(&gateway, "order=asc", limit), ascending, "limit {limit}");
    }
    let window = format!("start_time={}&end_time={}", ts(base_ms() + 4000), ts(base_ms() + 6000));
    let forwards = walk(&gateway, &window, 17);
    assert_eq!(forwards.len(), 3 * 41, "a window across the shared and the own records");
    assert_eq!(walk(&gateway, &format!("{window}&order=desc"), 17), reversed(forwards));
}
