//! Bad input gives clear errors and never a panic (RELIABILITY.md C1): ragged rows, bad
//! UTF-8, huge cells, an empty file, a header only, comments, a BOM, CRLF, quoted commas,
//! empty ids, NaN and infinities. Bad rows are skipped with their line number and reason,
//! good rows still go out, and the exit code is 0 unless every row failed.

mod streamer_support;

use std::process::Output;

use streamer_support::*;

/// Runs `--dry-run` over `bytes` written to a file.
fn dry_run(bytes: &[u8]) -> (Output, String) {
    let dir = temp_dir();
    let path = write_file(dir.path(), "input.csv", bytes);
    let out = run_streamer(&["--file", path.to_str().unwrap(), "--dry-run", "--progress", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_ne!(out.status.code(), Some(101), "panicked:\n{stderr}");
    (out, stderr)
}

const HEADER: &str = "timestamp,metric_name,gpu_id,uuid,Hostname,value\n";

fn row(uuid: &str, value: &str) -> String {
    format!("2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,0,{uuid},host-1,{value}\n")
}

#[test]
fn ragged_rows_are_skipped_with_their_line_and_the_rest_published() {
    let text = format!(
        "{HEADER}{}a,b,c\n{}{}x,y,z,w,v,u,t\n",
        row("GPU-1", "40"),
        row("GPU-2", "41"),
        row("GPU-3", "42")
    );
    let (out, stderr) = dry_run(text.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(parse_lines(&out.stdout).len(), 3);
    assert_eq!(summary_count(&stderr, "ragged_row"), 2, "{stderr}");
    assert!(stderr.contains("line 3: skipped (ragged_row): expected 6 cells, got 3"), "{stderr}");
    assert!(stderr.contains("line 6: skipped (ragged_row): expected 6 cells, got 7"), "{stderr}");
}

#[test]
fn a_row_with_bad_utf8_is_skipped_alone() {
    let mut bytes = format!("{HEADER}{}", row("GPU-1", "40")).into_bytes();
    bytes.extend_from_slice(b"2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,0,GPU-\xff\xfe,host-1,3\n");
    bytes.extend_from_slice(row("GPU-3", "42").as_bytes());
    let (out, stderr) = dry_run(&bytes);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(parse_lines(&out.stdout).len(), 2);
    assert!(
        stderr.contains("line 3: skipped (bad_utf8): column \"uuid\" is not UTF-8"),
        "{stderr}"
    );
}

#[test]
fn a_one_mebibyte_cell_is_skipped_as_too_large() {
    let huge = "x".repeat(1024 * 1024);
    let text = format!("{HEADER}{}{}", row("GPU-1", &huge), row("GPU-2", "41"));
    let (out, stderr) = dry_run(text.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(parse_lines(&out.stdout).len(), 1);
    assert_eq!(summary_count(&stderr, "row_too_large"), 1, "{stderr}");
    assert!(stderr.contains("line 2: skipped (row_too_large)"), "{stderr}");
}

#[test]
fn an_empty_file_is_an_input_error() {
    let (out, stderr) = dry_run(b"");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("empty file: no header row"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_header_without_rows_says_so() {
    let (out, stderr) = dry_run(HEADER.as_bytes());
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("header row and no data rows"), "{stderr}");
}

#[test]
fn a_header_that_is_not_utf8_or_blank_is_refused() {
    let (out, stderr) = dry_run(b"uuid,\xffvalue\nGPU-1,3\n");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad header row: column 2 is not UTF-8"), "{stderr}");
    let (out, stderr) = dry_run(b" , \nGPU-1,3\n");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no column names"), "{stderr}");
}

#[test]
fn a_missing_file_is_an_input_error() {
    let out = run_streamer(&["--file", "/nonexistent/telemetry.csv", "--dry-run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot open /nonexistent/telemetry.csv"), "{stderr}");
}

#[test]
fn bom_crlf_comments_quotes_empty_ids_and_non_finite_values_are_handled() {
    let text = "\u{feff}timestamp,metric_name,gpu_id,uuid,Hostname,value,labels_raw\r\n\
        # a comment line\r\n\
        2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,0,GPU-1,host-1,40,\"a=\"\"x,y\"\"\"\r\n\
        2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,,,host-1,41,\r\n\
        2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,2,,host-1,42,\r\n\
        2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,3,GPU-3,host-1,NaN,\r\n\
        2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,3,GPU-3,host-1,inf,\r\n\
        2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,3,../../etc/x,host-1,1,\r\n\
        2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,4,GPU-4,host-1,44,\"broken=\"\"\r\n";
    let (out, stderr) = dry_run(text.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let records = parse_lines(&out.stdout);
    let ids: Vec<&str> = records.iter().map(|r| r["uuid"].as_str().unwrap()).collect();
    assert_eq!(ids, ["GPU-1", "host-1:2", "GPU-4"]);
    assert_eq!(records[0]["labels"]["a"], "x,y", "quoted comma inside a label value");
    assert_eq!(records[0]["source_timestamp"], "2025-07-18T20:42:34Z", "BOM gone, CR gone");
    assert_eq!(summary_count(&stderr, "missing_gpu_id"), 1, "{stderr}");
    assert_eq!(summary_count(&stderr, "bad_value"), 2, "{stderr}");
    assert_eq!(summary_count(&stderr, "invalid_gpu_id"), 1, "{stderr}");
    assert_eq!(summary_count(&stderr, "labels warnings"), 1, "{stderr}");
    assert_eq!(summary_count(&stderr, "rows read"), 7, "{stderr}");
}

#[test]
fn when_every_row_fails_the_exit_code_says_so() {
    let text = format!("{HEADER}{}{}", row("GPU-1", "NaN"), row("a/b", "1"));
    let (out, stderr) = dry_run(text.as_bytes());
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let (out, stderr) = dry_run(b"a,b\n1,2\n3,4\n");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("every row will be skipped"), "{stderr}");
}

#[test]
fn a_ten_megabyte_line_is_skipped_without_trouble() {
    let huge = "9".repeat(10 * 1024 * 1024);
    let text = format!("{HEADER}{}{}", row("GPU-1", &huge), row("GPU-2", "41"));
    let (out, stderr) = dry_run(text.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(parse_lines(&out.stdout).len(), 1);
}
