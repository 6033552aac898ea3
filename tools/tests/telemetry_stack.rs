//! `telemetry-stack` as a user runs it: the whole pipeline starts, its broker's topic gets
//! the disk budget's retention (without one it grew by about 4 GB an hour), the progress
//! line says where the data is and how big it is, and Ctrl-C stops everything with exit 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[test]
fn the_stack_keeps_to_its_disk_budget_and_reports_its_data_in_the_progress_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("stack");
    let mut child = Command::new(env!("CARGO_BIN_EXE_telemetry-stack"))
        .args(["--broker", &free_addr(), "--http", &free_addr()])
        .args(["--data-dir", data.to_str().unwrap(), "--progress", "1", "--rate", "500"])
        .args(["--retention-mib", "1024"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("telemetry-stack starts");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let mut progress = None;
    for line in stdout.lines() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("stored") && line.contains(" MiB") && !line.contains("stored 0 ") {
            progress = Some(line);
            break;
        }
        assert!(Instant::now() < deadline, "no progress line with data: {seen:#?}");
    }
    let progress = progress.unwrap_or_else(|| panic!("the stack ended early: {seen:#?}"));
    let banner = seen.join("\n");
    assert!(banner.contains("at most about 1024 MiB in"), "{banner}");
    assert!(progress.contains(&format!("data {}", data.display())), "{progress}");

    // Half the budget over the 16 partitions, less the segment being written: 28 MiB.
    let meta = std::fs::read_to_string(data.join("broker/topics/telemetry/topic.json"))
        .expect("the telemetry topic exists");
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(meta["retention_bytes"], 28 * 1024 * 1024, "{meta}");

    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("mqd stopped"), "{stderr}");
}
