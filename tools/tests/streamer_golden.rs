//! Both CSV layouts parse to the expected records: the `--dry-run` output of the binary is
//! compared with golden JSON lines in `tests/golden/` (the processing `timestamp` is checked
//! for its form and left out of the comparison). `STREAMER_UPDATE_GOLDEN=1` rewrites the
//! golden files from the current output, to be read and checked by a person before commit.

mod streamer_support;

use std::path::{Path, PathBuf};

use streamer_support::*;

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name)
}

fn is_rfc3339_millis(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z'
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22]
            .iter()
            .all(|&i| b[i].is_ascii_digit())
}

/// Runs `--dry-run` on `csv` and compares its records with `expected`.
#[track_caller]
fn check_against_golden(csv: &Path, expected: &str) -> String {
    let out = run_streamer(&["--file", csv.to_str().unwrap(), "--dry-run"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    for line in String::from_utf8(out.stdout.clone()).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let ts = v["timestamp"].as_str().expect("a timestamp");
        assert!(is_rfc3339_millis(ts), "timestamp {ts:?}");
        assert!(line.starts_with(r#"{"timestamp":""#), "timestamp comes first: {line}");
    }
    let got = parse_lines(&out.stdout);
    let path = golden(expected);
    if std::env::var_os("STREAMER_UPDATE_GOLDEN").is_some() {
        write_lines(&path, &got);
    }
    let text = std::fs::read_to_string(&path).expect("golden file");
    let want: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).expect("golden JSON")).collect();
    assert_eq!(got.len(), want.len(), "record count; stderr:\n{stderr}");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "record {i} differs from {expected}");
    }
    stderr
}

#[test]
fn the_wide_nvidia_smi_layout_matches_its_golden_records() {
    let stderr = check_against_golden(&golden("wide.csv"), "wide.expected.jsonl");
    assert_eq!(summary_count(&stderr, "skipped rows"), 1, "{stderr}");
    assert_eq!(summary_count(&stderr, "missing_gpu_id"), 1, "{stderr}");
    assert!(stderr.contains("line 5: skipped (missing_gpu_id)"), "{stderr}");
}

#[test]
fn the_first_rows_of_the_real_dcgm_export_match_their_golden_records() {
    let Some(real) = real_dcgm_file() else { return };
    let text = std::fs::read_to_string(real).unwrap();
    let first: Vec<&str> = text.lines().take(21).collect();
    let dir = temp_dir();
    let csv = write_file(dir.path(), "first20.csv", (first.join("\n") + "\n").as_bytes());
    let stderr = check_against_golden(&csv, "dcgm_first20.expected.jsonl");
    assert_eq!(summary_count(&stderr, "rows read"), 20, "{stderr}");
    assert_eq!(summary_count(&stderr, "skipped rows"), 0, "{stderr}");
}

#[test]
fn the_whole_real_export_converts_without_a_skip() {
    let Some(real) = real_dcgm_file() else { return };
    let out = run_streamer(&["--file", real.to_str().unwrap(), "--dry-run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let records = parse_lines(&out.stdout);
    assert_eq!(records.len(), 2470);
    for r in &records {
        assert_eq!(r["metrics"].as_object().unwrap().len(), 1, "{r}");
        assert_eq!(r["labels"]["UUID"], r["uuid"], "labels_raw agrees with the uuid column");
        assert!(r["source_timestamp"].as_str().unwrap().ends_with('Z'));
    }
}

#[test]
fn flags_come_from_a_config_file_and_the_command_line_wins() {
    let dir = temp_dir();
    let wide = golden("wide.csv");
    let config = format!(
        "file = {:?}\ndry_run = true\ncount = 3\nprogress = 0\nshard = \"0/1\"\nonce = true\n",
        wide.to_str().unwrap()
    );
    let path = write_file(dir.path(), "streamer.toml", config.as_bytes());
    let out = run_streamer(&["--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(parse_lines(&out.stdout).len(), 3);
    let out = run_streamer(&["--config", path.to_str().unwrap(), "--count", "1"]);
    assert_eq!(parse_lines(&out.stdout).len(), 1, "the command line wins");
    let bad = write_file(dir.path(), "bad.toml", b"rate = { per_worker = 1 }\n");
    let out = run_streamer(&["--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a flag value"));
}

#[test]
fn looping_replays_the_same_records_from_memory() {
    let wide = golden("wide.csv");
    let out =
        run_streamer(&["--file", wide.to_str().unwrap(), "--dry-run", "--loop", "--count", "20"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let records = parse_lines(&out.stdout);
    // 5 rows per pass, one skipped: 4 passes, 16 records, each pass the same.
    assert_eq!(records.len(), 16, "{stderr}");
    assert_eq!(records[0..4], records[12..16]);
    assert_eq!(summary_count(&stderr, "missing_gpu_id"), 4, "counted on every pass");
    assert_eq!(stderr.matches("skipped (missing_gpu_id)").count(), 1, "logged once: {stderr}");
}

#[test]
fn synthetic_mode_generates_dcgm_shaped_records_for_every_gpu() {
    let out = run_streamer(&[
        "--synthetic",
        "--hosts",
        "2",
        "--gpus-per-host",
        "3",
        "--count",
        "66",
        "--dry-run",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let records = parse_lines(&out.stdout);
    assert_eq!(records.len(), 66);
    let gpus: std::collections::BTreeSet<&str> =
        records.iter().map(|r| r["uuid"].as_str().unwrap()).collect();
    assert_eq!(gpus.len(), 6, "one tick covers every GPU");
    assert!(records.iter().all(|r| r["metrics"].as_object().unwrap().len() == 1));
    assert_eq!(records[0]["hostname"], "gpu-node-001");
    assert_eq!(records[0]["model"], "NVIDIA H100 80GB HBM3");
    let again = run_streamer(&[
        "--synthetic",
        "--hosts",
        "2",
        "--gpus-per-host",
        "3",
        "--count",
        "1",
        "--dry-run",
    ]);
    assert_eq!(parse_lines(&again.stdout)[0]["uuid"], records[0]["uuid"], "stable UUIDs");
}
