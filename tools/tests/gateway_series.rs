//! The gateway's `/series` over collectors that hold some of the same samples (at-least-once
//! delivery and partitions moving between collectors put a record on two of them): every
//! sample counts once, so the merged buckets are the buckets of the union.
//!
//! Two real collectors, each on a topic of its own: both topics first get the same
//! records `S` (same keys in the same order, so the same partitions and offsets: the same
//! samples, as a record redelivered to a second collector is), then collector A's topic
//! gets records `X` and B's records `Y`. A bucket can so hold samples of A only, of B
//! only, of both without a common sample, and of both with common samples.

mod collector_support;

use std::collections::BTreeMap;

use collector_support::*;
use serde_json::Value;

const GPU: &str = "GPU-overlap-0";
const ALONE: &str = "GPU-only-on-a";

/// (time ms, metric, value) of every sample in `records`.
type Samples = Vec<(i64, &'static str, f64)>;
/// Records of one GPU: (time ms, its metrics).
type Rows = Vec<(i64, Vec<(&'static str, f64)>)>;
/// A bucket being summed: count, least, greatest, sum.
type Sums = (u64, f64, f64, f64);

fn records(samples: &Rows, gpu: &str) -> Vec<(String, String)> {
    samples.iter().map(|(ts, metrics)| (gpu.to_string(), record(gpu, *ts, metrics))).collect()
}

fn flatten(samples: &Rows) -> Samples {
    samples.iter().flat_map(|(ts, ms)| ms.iter().map(move |(m, v)| (*ts, *m, *v))).collect()
}

/// The series buckets of `samples` in `[start, end]` with buckets of `step` ms:
/// metric → `[start, count, min, max, mean]` as JSON numbers.
fn buckets_of(samples: &Samples, start: i64, end: i64, step: i64) -> BTreeMap<String, Value> {
    let mut acc: BTreeMap<&str, BTreeMap<i64, Sums>> = BTreeMap::new();
    for &(ts, metric, value) in samples {
        if ts < start || ts > end {
            continue;
        }
        let b = acc.entry(metric).or_default().entry(ts.div_euclid(step) * step).or_insert((
            0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
        ));
        *b = (b.0 + 1, b.1.min(value), b.2.max(value), b.3 + value);
    }
    acc.into_iter()
        .map(|(metric, buckets)| {
            let list: Vec<Value> = buckets
                .into_iter()
                .map(|(t, (n, min, max, sum))| serde_json::json!([t, n, min, max, sum / n as f64]))
                .collect();
            (metric.to_string(), Value::Array(list))
        })
        .collect()
}

fn series_of(body: &Value) -> BTreeMap<String, Value> {
    body["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["metric"].as_str().unwrap().to_string(), s["buckets"].clone()))
        .collect()
}

/// Goal: where two collectors hold the same samples, the gateway's series counts each
/// once: its buckets (count, least, greatest, mean) equal the buckets of the union of what
/// the collectors hold, for the whole window and for a window cut mid-bucket; a GPU one
/// collector holds passes through as before. Method: the two collectors and records of the
/// module docs; the expected buckets are computed here from the samples published.
#[test]
fn series_over_collectors_holding_the_same_samples_count_each_once() {
    let broker = start_broker();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Server::collector(broker.addr, dir_a.path(), &["--topic", "ta", "--group", "ga"]);
    let b = Server::collector(broker.addr, dir_b.path(), &["--topic", "tb", "--group", "gb"]);
    a.wait_health(200);
    b.wait_health(200);

    // A recent whole minute, so no retention setting can take the samples away.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let t0 = (now.as_millis() as i64 / 60_000 - 10) * 60_000;
    // Integer values: every sum is exact, whatever the order of adding.
    let common: Rows = (0..40)
        .map(|k| (t0 + k * 500, vec![("UTIL", (k % 7) as f64), ("TEMP", 40.0 + k as f64)]))
        .collect();
    let only_a: Rows =
        (0..30).map(|k| (t0 + 250 + k * 1000, vec![("UTIL", (k % 5) as f64 * 10.0)])).collect();
    let only_b: Rows = (10..50)
        .map(|k| (t0 + 750 + k * 1000, vec![("UTIL", 100.0 - k as f64), ("POWER", k as f64)]))
        .collect();
    let alone: Rows = (0..10).map(|k| (t0 + k * 1000, vec![("UTIL", k as f64)])).collect();

    publish(broker.addr, "ta", &records(&common, GPU));
    publish(broker.addr, "tb", &records(&common, GPU));
    publish(broker.addr, "ta", &records(&only_a, GPU));
    publish(broker.addr, "tb", &records(&only_b, GPU));
    publish(broker.addr, "ta", &records(&alone, ALONE));
    let stored_a = (common.len() + only_a.len() + alone.len()) as u64;
    let stored_b = (common.len() + only_b.len()) as u64;
    a.wait_stats("A stored its records", |s| s["records_stored"] == stored_a);
    b.wait_stats("B stored its records", |s| s["records_stored"] == stored_b);

    let gateway = Server::gateway(&[&a, &b]);
    let union: Samples = [flatten(&common), flatten(&only_a), flatten(&only_b)].concat();
    let end = t0 + 60_000 - 1;
    for (start, metrics) in [(t0, ""), (t0 + 300, ""), (t0 + 300, "&metric=UTIL")] {
        let path = format!(
            "/api/v1/gpus/{GPU}/series?start_time={}&end_time={}&points=60{metrics}",
            ts(start),
            ts(end)
        );
        let body = gateway.json(&path);
        assert_eq!(body["step_ms"], 1000, "{body}");
        assert_eq!(body["source"], "merged", "{body}");
        let mut expected = buckets_of(&union, start, end, 1000);
        if !metrics.is_empty() {
            expected.retain(|m, _| m == "UTIL");
        }
        assert_eq!(series_of(&body), expected, "{path}");
        let count: u64 = expected
            .values()
            .flat_map(|b| b.as_array().unwrap())
            .map(|b| b[1].as_u64().unwrap())
            .sum();
        assert_eq!(body["samples"], count, "{body}");

        // The collectors' own answers overlap: adding them up would count the common
        // samples twice, which is what the gateway must not do.
        let held: u64 = [&a, &b].iter().map(|c| c.json(&path)["samples"].as_u64().unwrap()).sum();
        assert!(held > count, "the collectors share samples in {path}: {held} vs {count}");
    }

    // A GPU one collector holds: its answer as it is.
    let path =
        format!("/api/v1/gpus/{ALONE}/series?start_time={}&end_time={}&points=60", ts(t0), ts(end));
    let direct = a.json(&path);
    let through = gateway.json(&path);
    assert_eq!(through, direct);
    assert_eq!(series_of(&through), buckets_of(&flatten(&alone), t0, end, 1000));
}
