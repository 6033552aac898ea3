//! A broker that refuses the token: the streamer and the collector stop at once with a
//! named error (`auth refused: ...`) and a non-zero exit code, rather than retrying for
//! ever, since every connection would be refused alike. The broker runs in this process on
//! 127.0.0.1 with an auth token, as `mqd --auth-token` does.

mod collector_support;
mod streamer_support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mq_broker::config::Config;
use mq_broker::event_loop::Running;
use streamer_support::{free_addr, spawn_streamer, summary_count, wait_for, STREAMER};

const TOKEN: &str = "s3cret-token";
/// A refusal must end a run within this (retrying for ever would not).
const EXIT_WITHIN: Duration = Duration::from_secs(5);

fn broker_with_token(addr: SocketAddr) -> Running {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut config = Config::memory(addr);
    config.core.auth_token = Some(TOKEN.into());
    Running::start(config).expect("broker starts")
}

/// The streamer with `args` and the token in `MQ_AUTH_TOKEN` (or none).
fn spawn_streamer_env(args: &[&str], token: Option<&str>) -> Child {
    let mut command = Command::new(STREAMER);
    command
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("MQ_AUTH_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        command.env("MQ_AUTH_TOKEN", token);
    }
    command.spawn().expect("the streamer starts")
}

#[track_caller]
fn assert_refused(code: i32, stderr: &str, broker_code: &str) {
    assert_eq!(code, 2, "exit code 2 for a refused token:\n{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("telemetry-streamer: auth refused: the broker at "), "{stderr}");
    assert!(last.contains(broker_code), "{last}");
    assert!(last.contains("--auth-token or MQ_AUTH_TOKEN"), "{last}");
    assert!(!stderr.contains("trying again"), "no retry: {stderr}");
}

/// Goal: a wrong token (flag or environment) or none at all stops the streamer at once
/// with a named error and exit code 2, even with `--loop`, which would otherwise run for
/// ever; the right token publishes. Method: an in-process broker with a token; the streamer
/// with each, timed.
#[test]
fn the_streamer_stops_at_once_when_the_broker_refuses_its_token() {
    let broker = broker_with_token("127.0.0.1:0".parse().unwrap());
    let addr = broker.addr.to_string();
    let endless = ["--addr", &addr, "--synthetic", "--loop", "--workers", "4", "--progress", "0"];

    let started = Instant::now();
    let mut args = endless.to_vec();
    args.extend(["--auth-token", "wrong-token"]);
    let (code, stderr) = wait_for(spawn_streamer_env(&args, None), EXIT_WITHIN);
    assert_refused(code, &stderr, "AUTH_FAILED");
    assert!(stderr.contains("refused the auth token"), "{stderr}");
    assert_eq!(summary_count(&stderr, "records acked"), 0, "{stderr}");
    println!("wrong token: exit {code} after {:?}", started.elapsed());

    let (code, stderr) = wait_for(spawn_streamer_env(&endless, Some("wrong-token")), EXIT_WITHIN);
    assert_refused(code, &stderr, "AUTH_FAILED");

    let (code, stderr) = wait_for(spawn_streamer_env(&endless, None), EXIT_WITHIN);
    assert_refused(code, &stderr, "AUTH_REQUIRED");
    assert!(stderr.contains("requires an auth token and none was given"), "{stderr}");

    let good = ["--addr", &addr, "--synthetic", "--count", "200", "--auth-token", TOKEN];
    let (code, stderr) = wait_for(spawn_streamer_env(&good, None), Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(summary_count(&stderr, "records acked"), 200, "{stderr}");
}

/// Goal: a broker that starts refusing the token mid-run (restarted with a new one) stops
/// the streamer within a few seconds, without waiting out any backoff. Method: a broker
/// without a token; the streamer with `--loop` at a modest rate; once records are
/// acknowledged, the broker is restarted on the same port with a token the streamer does
/// not have.
#[test]
fn the_streamer_stops_when_a_restarted_broker_refuses_its_token() {
    let _ = env_logger::builder().is_test(true).try_init();
    let addr = free_addr();
    let broker = Running::start(Config::memory(addr)).expect("broker starts");
    let addr_text = addr.to_string();
    let child = spawn_streamer(&[
        "--addr",
        &addr_text,
        "--synthetic",
        "--loop",
        "--rate",
        "200",
        "--progress",
        "0.2",
        "--auth-token",
        "old-token",
    ]);
    std::thread::sleep(Duration::from_millis(800));
    broker.stop().expect("a clean stop");
    let broker = broker_with_token(addr);
    let restarted = Instant::now();
    let (code, stderr) = wait_for(child, EXIT_WITHIN + Duration::from_secs(5));
    println!("exit {code} {:?} after the restart", restarted.elapsed());
    assert_refused(code, &stderr, "AUTH_FAILED");
    assert!(summary_count(&stderr, "records acked") > 0, "records went before: {stderr}");
    drop(broker);
}

/// Goal: the collector stops too, non-zero, naming the refusal, instead of subscribing
/// again for ever. Method: an in-process broker with a token; a collector with a wrong
/// token; it must exit within a few seconds.
#[test]
fn the_collector_stops_when_the_broker_refuses_its_token() {
    let broker = broker_with_token("127.0.0.1:0".parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let mut collector = collector_support::Server::collector(
        broker.addr,
        dir.path(),
        &["--auth-token", "wrong-token"],
    );
    let deadline = Instant::now() + EXIT_WITHIN;
    let status = loop {
        if let Some(status) = collector.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running:\n{}", collector.log_text());
        std::thread::sleep(Duration::from_millis(20));
    };
    // The log thread may still be reading the last lines.
    std::thread::sleep(Duration::from_millis(200));
    let log = collector.log_text();
    assert_eq!(status.code(), Some(2), "exit 2: a restart cannot fix it: {log}");
    assert!(log.contains("auth refused: the broker refused the auth token"), "{log}");
    assert!(log.contains("AUTH_FAILED"), "{log}");
    assert!(!log.contains("cannot subscribe"), "no retry: {log}");
}
