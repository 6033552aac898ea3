//! Backpressure: a consumer that stops reading is paused, then disconnected with
//! SLOW_CONSUMER, while a consumer that keeps up on the same topic gets every record.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mq_protocol::admin::StatsReply;
use mq_protocol::{Request, Response};

fn stats(c: &mut Bin) -> StatsReply {
    let Response::Stats(json) = c.call(&Request::Stats) else { panic!() };
    serde_json::from_slice(&json).unwrap()
}

#[test]
fn a_stuck_consumer_is_paused_then_cut_off_while_a_fast_one_keeps_going() {
    let broker = start_broker(|c| {
        c.write_buf_bytes_max = 64 * 1024;
        c.slow_consumer = Duration::from_millis(500);
    });
    let mut slow = Bin::connect(broker.addr);
    let mut fast = Bin::connect(broker.addr);
    let mut admin = Bin::connect(broker.addr);
    slow.call(&create("t", 4));
    slow.call(&subscribe("t", "slow", 65_536));
    fast.call(&subscribe("t", "fast", 2_000));

    const TOTAL: usize = 20_000;
    let payload = "x".repeat(1000);
    let publisher = {
        let addr = broker.addr;
        std::thread::spawn(move || {
            let mut p = Bin::connect(addr);
            for chunk in 0..TOTAL / 500 {
                let reply =
                    p.call(&publish("t", (0..500).map(|i| format!("{chunk}-{i}-{payload}"))));
                assert!(matches!(reply, Response::Published(_)), "{reply:?}");
            }
        })
    };

    let mut received = 0;
    let mut saw_paused = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    while received < TOTAL && Instant::now() < deadline {
        if let Some(d) = fast.deliver_within(Duration::from_millis(200)) {
            received += d.records.len();
            fast.send(&ack_all("t", "fast", &d.records));
        }
        if !saw_paused {
            let s = stats(&mut admin);
            saw_paused = s.groups.iter().any(|g| {
                g.group == "slow"
                    && g.members.iter().any(|m| m.paused.as_deref() == Some("slow_consumer"))
            });
        }
    }
    publisher.join().unwrap();
    assert_eq!(received, TOTAL, "the fast consumer got every record");

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = stats(&mut admin);
        let slow_members =
            s.groups.iter().find(|g| g.group == "slow").map_or(0, |g| g.members.len());
        if slow_members == 0 {
            assert!(s.connections_rejected >= 1);
            break;
        }
        assert!(Instant::now() < deadline, "the slow consumer was never disconnected");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(saw_paused || stats(&mut admin).connections_rejected >= 1);
    assert!(slow.closed_within(Duration::from_secs(10)), "the slow consumer's socket is closed");
}
