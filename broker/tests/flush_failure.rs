//! A flush that fails (`syncfs` returning an I/O error, injected) with `--fsync always`:
//! the publishes it covered are answered `STORAGE_ERROR`, `HEALTH` says `degraded`, other
//! connections carry on, and once flushes succeed again so do publishes and `HEALTH`.
//! Both ways a turn is flushed are covered: on the loop thread (a small turn) and on the
//! flusher thread (a turn that read more than 16 KiB).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use mq_broker::config::Config;
use mq_broker::event_loop::Running;
use mq_protocol::admin::HealthReply;
use mq_protocol::{ErrorCode, Request, Response};

fn health(c: &mut Bin) -> HealthReply {
    let Response::Health(json) = c.call(&Request::Health) else { panic!("no health reply") };
    serde_json::from_slice(&json).unwrap()
}

#[track_caller]
fn assert_published(reply: Response, n: usize) {
    assert!(matches!(&reply, Response::Published(p) if p.len() == n), "{reply:?}");
}

#[test]
fn a_failed_flush_fails_the_publishes_it_covered_and_nothing_else() {
    let _ = env_logger::builder().is_test(true).try_init();
    let dir = tempfile::tempdir().unwrap();
    let fail = Arc::new(AtomicBool::new(false));
    let mut config = Config::disk("127.0.0.1:0".parse().unwrap(), dir.path());
    config.disk.fail_flush = Some(fail.clone());
    let broker = Running::start(config).unwrap();
    let mut publisher = Bin::connect(broker.addr);
    let mut admin = Bin::connect(broker.addr);
    assert_eq!(publisher.call(&create("t", 1)), Response::Ok);
    let small = || publish("t", (0..3).map(|i| format!("small {i}")));
    let big = || publish("t", (0..200).map(|i| format!("{i:0>200}")));

    assert_published(publisher.call(&small()), 3);
    assert_published(publisher.call(&big()), 200);
    assert_eq!(health(&mut admin).status, "ok");

    fail.store(true, Ordering::SeqCst);
    for request in [small(), big()] {
        match publisher.call(&request) {
            Response::Error { code, message } => {
                assert_eq!(code, ErrorCode::STORAGE_ERROR);
                assert!(message.contains("flush to disk failed"), "{message}");
            }
            other => panic!("a publish whose flush failed was answered {other:?}"),
        }
    }
    let degraded = health(&mut admin);
    assert_eq!(degraded.status, "degraded");
    assert!(degraded.detail.unwrap().contains("injected: flush failed"));
    // Requests that need no flush are answered as usual on every connection.
    assert_eq!(publisher.call(&Request::Ping), Response::Pong);

    fail.store(false, Ordering::SeqCst);
    assert_published(publisher.call(&small()), 3);
    assert_published(publisher.call(&big()), 200);
    assert_eq!(health(&mut admin).status, "ok");
    broker.stop().unwrap();
}

#[test]
fn a_publisher_that_half_closes_gets_its_replies_even_when_the_flush_outlasts_the_close_grace() {
    use std::io::{Read, Write};
    use std::sync::atomic::AtomicU64;
    let _ = env_logger::builder().is_test(true).try_init();
    let dir = tempfile::tempdir().unwrap();
    let delay = Arc::new(AtomicU64::new(0));
    let mut config = Config::disk("127.0.0.1:0".parse().unwrap(), dir.path());
    config.disk.flush_delay_ms = Some(delay.clone());
    let broker = Running::start(config).unwrap();
    assert_eq!(Bin::connect(broker.addr).call(&create("t", 1)), Response::Ok);
    // Every flush now takes 1.5 s, longer than the 1 s a closing connection is given to
    // drain; a publish bigger than 16 KiB goes to the flusher thread, so the loop sees the
    // peer's EOF while the reply is held.
    delay.store(1_500, Ordering::SeqCst);
    let payload = "x".repeat(1_000);
    let mut lines = String::new();
    for _ in 0..40 {
        lines += &format!("PUB t {}\r\n{payload}\r\n", payload.len());
    }
    let mut s = std::net::TcpStream::connect(broker.addr).unwrap();
    s.write_all(lines.as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert_eq!(out.matches("+OK ").count(), 40, "every publish answered: {out:?}");
    delay.store(0, Ordering::SeqCst);
    broker.stop().unwrap();
}
