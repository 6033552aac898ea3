//! The streamer's memory has a bound whatever the input (issue 14): a 50 MB file without a
//! newline (read as the header), a 50 MB data row, and `--file` naming an endless input.
//! Before the line bound the first took 464 MB of RSS, the second 120 to 152 MB, and the
//! endless one grew until the allocator aborted. The bound is about 2 × `--max-row-bytes`
//! plus the buffers and the program itself; this checks 64 MiB of peak RSS with the
//! default 64 KiB limit (a debug build of the streamer starts at about 10 MiB).

mod streamer_support;

use std::io::Write;
use std::process::Output;

use streamer_support::*;

/// Peak RSS bound asserted for every run here.
const PEAK_RSS_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// The largest peak RSS of the children this test process has waited for (all of them are
/// streamers bounded alike, so the maximum over them is the figure to check).
fn children_peak_rss_bytes() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is given.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage");
    // SAFETY: initialised by the successful call above.
    let usage = unsafe { usage.assume_init() };
    usage.ru_maxrss as u64 * 1024 // kilobytes on Linux
}

fn write_big(dir: &std::path::Path, name: &str, head: &[u8], filler: usize, tail: &[u8]) -> String {
    let path = dir.join(name);
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    file.write_all(head).unwrap();
    let block = vec![b'a'; 1024 * 1024];
    for _ in 0..filler / block.len() {
        file.write_all(&block).unwrap();
    }
    file.write_all(tail).unwrap();
    file.flush().unwrap();
    path.to_str().unwrap().to_string()
}

fn dry_run(path: &str) -> (Output, String) {
    let out = run_streamer(&["--file", path, "--dry-run", "--progress", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_ne!(out.status.code(), Some(101), "panicked:\n{stderr}");
    (out, stderr)
}

const HEADER: &[u8] = b"timestamp,metric_name,gpu_id,uuid,Hostname,value\n";
const ROW: &[u8] = b"2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,0,GPU-1,host-1,40\n";

#[test]
fn a_fifty_megabyte_header_is_a_clear_error_in_bounded_memory() {
    let dir = temp_dir();
    let path = write_big(dir.path(), "line.csv", b"", 50 * 1024 * 1024, b"");
    let (out, stderr) = dry_run(&path);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad header row: longer than 65536 bytes"), "{stderr}");
    let peak = children_peak_rss_bytes();
    assert!(peak < PEAK_RSS_MAX_BYTES, "peak RSS {} MiB", peak >> 20);
}

#[test]
fn a_fifty_megabyte_row_is_skipped_up_to_its_end_in_bounded_memory() {
    let dir = temp_dir();
    let mut head = HEADER.to_vec();
    head.extend_from_slice(ROW);
    let mut tail = b"\n".to_vec();
    tail.extend_from_slice(ROW);
    let path = write_big(dir.path(), "row.csv", &head, 50 * 1024 * 1024, &tail);
    let (out, stderr) = dry_run(&path);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(parse_lines(&out.stdout).len(), 2, "the rows on either side: {stderr}");
    assert_eq!(summary_count(&stderr, "row_too_large"), 1, "{stderr}");
    assert!(stderr.contains("line 3: skipped (row_too_large): 52428800 bytes"), "{stderr}");
    let peak = children_peak_rss_bytes();
    assert!(peak < PEAK_RSS_MAX_BYTES, "peak RSS {} MiB", peak >> 20);
}

#[test]
fn an_endless_input_is_refused_at_its_header_without_growing() {
    // `--file /dev/zero` (or a symlink to it): one endless line, read as the header.
    let (out, stderr) = dry_run("/dev/zero");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("longer than 65536 bytes"), "{stderr}");
    let peak = children_peak_rss_bytes();
    assert!(peak < PEAK_RSS_MAX_BYTES, "peak RSS {} MiB", peak >> 20);
}
