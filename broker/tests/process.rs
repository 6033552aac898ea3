//! The real `mqd` binary: graceful shutdown on SIGTERM and SIGINT exits 0 after answering
//! what it had read.

mod common;

use std::time::Duration;

use common::*;
use mq_protocol::Response;

#[test]
fn sigterm_and_sigint_shut_down_gracefully_with_exit_code_0() {
    for signal in ["TERM", "INT"] {
        let mut mqd = Mqd::spawn(&["--storage", "memory"]);
        let mut c = Bin::connect(mqd.addr);
        let reply = c.call(&publish("t", (0..100).map(|i| i.to_string())));
        assert!(matches!(reply, Response::Published(ref p) if p.len() == 100));
        c.call(&subscribe("t", "g", 1000));
        mqd.signal(signal);
        let status = mqd.wait_within(Duration::from_secs(10)).expect("mqd exits within 10 s");
        assert_eq!(status.code(), Some(0), "SIG{signal}");
        assert!(c.closed_within(Duration::from_secs(2)), "connections are closed at shutdown");
    }
}

#[test]
fn an_unusable_config_exits_2_with_a_message() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mqd"))
        .args(["--storage", "tape"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--storage must be memory or disk"));
}

#[test]
fn settings_come_from_the_config_file_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mqd.toml");
    std::fs::write(&path, "storage = \"memory\"\npartitions = 3\nmax_deliveries = 7\n").unwrap();
    let mqd = Mqd::spawn(&["--config", path.to_str().unwrap(), "--max-deliveries", "4"]);
    let mut c = Bin::connect(mqd.addr);
    let Response::Info(json) = c.call(&mq_protocol::Request::Info) else { panic!() };
    let info: mq_protocol::admin::InfoReply = serde_json::from_slice(&json).unwrap();
    assert_eq!(info.partitions_default, 3, "from the file");
    assert_eq!(info.max_deliveries, 4, "the flag wins");
    assert_eq!(info.storage, "memory");
}
