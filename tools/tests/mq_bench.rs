//! `mq-bench` smoke tests: tiny runs against an in-process broker, checking the JSON line
//! and the exit codes. No assertion on speed: the numbers depend on the machine.

mod common;

use common::{dead_addr, run, start_broker};
use mq_client::{Client, ClientConfig};

const BENCH: &str = env!("CARGO_BIN_EXE_mq-bench");

/// Goal: a run completes, accounts for every record, and its last stdout line is the JSON
/// object with the documented keys.
#[test]
fn a_small_run_reports_json_on_its_last_line() {
    let broker = start_broker();
    let args = [
        "--count",
        "3000",
        "--size",
        "64",
        "--publishers",
        "2",
        "--subscribers",
        "2",
        "--json",
        "--quiet",
    ];
    let r = run(BENCH, Some(broker.addr), &args, "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let last = r.stdout.lines().last().expect("a JSON line");
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["records"], 6000);
    assert_eq!((v["missing"].as_u64(), v["duplicates"].as_u64()), (Some(0), Some(0)));
    assert_eq!(v["broker_storage"], "memory");
    for key in ["publish_records_per_s", "publish_mb_per_s", "e2e_records_per_s", "e2e_mb_per_s"] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}");
    }
    for key in ["p50", "p99", "p999", "max"] {
        assert!(v["latency_us"][key].as_u64().unwrap() >= 1, "{key}");
    }
    assert!(r.stderr.contains("end to end:"), "the summary goes to stderr with --json");
    // Issue 13: its subscriber groups went with it, instead of lagging for ever.
    let mut client = Client::connect(&[broker.addr], ClientConfig::default()).unwrap();
    let left = client.groups().unwrap().groups;
    assert!(left.iter().all(|g| !g.group.starts_with("bench-")), "groups left: {left:?}");
}

/// Goal: the paced mode and a shared group work (tiny: 200 records at 4,000/s).
#[test]
fn rate_mode_with_a_shared_group() {
    let broker = start_broker();
    let args =
        ["--count", "200", "--rate", "4000", "--subscribers", "2", "--subscribers-share", "--json"];
    let r = run(BENCH, Some(broker.addr), &args, "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(r.stdout.lines().last().unwrap()).unwrap();
    assert_eq!((v["records"].as_u64(), v["missing"].as_u64()), (Some(200), Some(0)));
    assert!(v["publish_seconds"].as_f64().unwrap() >= 0.04, "paced at 4,000 records/s");
    assert!(v["sender_late_us"]["p99"].is_u64(), "paced runs report the sender's lateness");
}

/// Goal: exit 1 for an unreachable broker, 2 for bad arguments.
#[test]
fn exit_codes() {
    let r = run(BENCH, Some(dead_addr()), &["--count", "10"], "");
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("cannot reach broker"), "{}", r.stderr);
    let broker = start_broker();
    for args in
        [&["--size", "8"][..], &["--rate", "0"], &["--count", "1", "--duration", "1"], &["--bogus"]]
    {
        assert_eq!(run(BENCH, Some(broker.addr), args, "").code, 2, "{args:?}");
    }
}
