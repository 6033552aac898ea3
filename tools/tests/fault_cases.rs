//! Fault and bad-input cases of `docs/fault-cases.md` for the collector that no other test
//! covered, with a real `telemetry-collector` process, real files in a temporary directory
//! and an in-process broker on 127.0.0.1:0.

mod collector_support;

use collector_support::*;

/// JSONL files a process holds open.
fn open_jsonl_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|target| target.extension().is_some_and(|x| x == "jsonl"))
                .count()
        })
        .unwrap_or(0)
}

/// H2: a line in the middle of a stored JSONL file is overwritten with garbage (same length,
/// so every other line keeps its position) while the collector is stopped; after a restart a
/// query over the file skips that line with a WARN and returns the rest, never a 500. A limit
/// above the cap is a 400 naming `limit`.
#[test]
fn h2_a_corrupt_line_in_the_middle_of_a_file_is_skipped_and_the_rest_served() {
    let broker = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let t0 = base_ms();
    let records: Vec<(String, String)> = (0..30i64)
        .map(|i| ("GPU-h2".to_string(), record("GPU-h2", t0 + i * 1000, &[("A", i as f64)])))
        .collect();
    let collector = Server::collector(broker.addr, dir.path(), &["--cache-samples-per-gpu", "1"]);
    publish(broker.addr, "telemetry", &records);
    collector.wait_stats("30 stored", |s| s["records_stored"] == 30);
    assert_eq!(collector.terminate(), Some(0));

    let file = dir.path().join("gpus").join(hour_name(t0)).join("GPU-h2.jsonl");
    let file = if file.exists() {
        file
    } else {
        // The 30 s may span an hour boundary: take the first file of this GPU.
        let name = gpu_files(dir.path()).into_iter().find(|n| n.ends_with("GPU-h2.jsonl")).unwrap();
        dir.path().join("gpus").join(name)
    };
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 3, "{} lines", lines.len());
    let victim = lines.len() / 2;
    let mut damaged = String::new();
    for (i, line) in lines.iter().enumerate() {
        if i == victim {
            damaged.push_str(&"#".repeat(line.len()));
        } else {
            damaged.push_str(line);
        }
        damaged.push('\n');
    }
    std::fs::write(&file, damaged).unwrap();

    let collector = Server::collector(broker.addr, dir.path(), &["--cache-samples-per-gpu", "1"]);
    let (status, body) = collector.get("/api/v1/gpus/GPU-h2/telemetry?limit=100000");
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["count"], 29, "every sample but the damaged one: {body}");
    let values: Vec<f64> =
        page["samples"].as_array().unwrap().iter().map(|s| s["value"].as_f64().unwrap()).collect();
    assert!(values.windows(2).all(|w| w[0] < w[1]), "in order: {values:?}");
    let deadline = std::time::Instant::now() + PATIENCE;
    while !collector.log_text().contains("WARN") {
        assert!(std::time::Instant::now() < deadline, "no WARN for the corrupt line");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let (status, body) = collector.get("/api/v1/gpus/GPU-h2/telemetry?limit=100001");
    assert_eq!(status, 400);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["param"], "limit");
}

/// K4: 200 distinct GPUs against `--gpus-max 20`, `--open-files-max 8` and a cache of 50
/// samples: 180 records are refused as `gpu_limit` (and dead-lettered), open files stay
/// capped, and an evicted GPU's samples still come back whole from its file.
#[test]
fn k4_gpus_beyond_the_cap_are_refused_and_files_and_cache_stay_bounded() {
    let broker = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let collector = Server::collector(
        broker.addr,
        dir.path(),
        &[
            "--gpus-max",
            "20",
            "--open-files-max",
            "8",
            "--cache-samples-per-gpu",
            "10",
            "--cache-samples-max",
            "50",
        ],
    );
    let t0 = base_ms();
    let mut records = Vec::new();
    for round in 0..5i64 {
        for g in 0..20 {
            let uuid = format!("GPU-{g:04}");
            records.push((uuid.clone(), record(&uuid, t0 + round * 1000, &[("A", round as f64)])));
        }
    }
    publish(broker.addr, "telemetry", &records);
    collector.wait_stats("100 stored", |s| s["records_stored"] == 100);
    let newcomers: Vec<(String, String)> = (20..200)
        .map(|g| {
            let uuid = format!("GPU-{g:04}");
            (uuid.clone(), record(&uuid, t0, &[("A", 1.0)]))
        })
        .collect();
    publish(broker.addr, "telemetry", &newcomers);
    let stats = collector.wait_stats("100 stored and 180 refused", |s| {
        s["records_stored"] == 100 && s["bad_records"]["gpu_limit"] == 180
    });
    assert_eq!(stats["samples_stored"], 100);
    assert!(stats["cache"]["evictions"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats["cache"]["samples"].as_u64().unwrap() <= 50, "{stats}");
    assert_eq!(collector.json("/api/v1/gpus?limit=1000")["count"], 20);
    let open = open_jsonl_files(collector.child.id());
    assert!(open <= 8, "{open} JSONL files open, at most 8 allowed");
    // 20 GPUs × 5 samples do not fit a 50-sample cache: the first GPUs were evicted, and
    // their samples come back complete from the files.
    for g in [0, 7, 19] {
        let page = collector.json(&format!("/api/v1/gpus/GPU-{g:04}/telemetry"));
        assert_eq!(page["count"], 5, "GPU-{g:04}: {page}");
    }
    let (status, _) = collector.get("/api/v1/gpus/GPU-0150/telemetry");
    assert_eq!(status, 404, "a refused GPU was never stored");
}
