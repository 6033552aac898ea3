//! Delivery over real sockets: pub/sub in both dialects, groups, redelivery, dead letters,
//! credit. Each test starts its own broker on 127.0.0.1:0.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use mq_protocol::text::TextReply;
use mq_protocol::{ErrorCode, OffsetRange, Request, Response};

const WAIT: Duration = Duration::from_secs(5);

#[test]
fn binary_publish_reaches_a_binary_subscriber_with_offsets_in_order() {
    let broker = start_broker(|_| {});
    let mut publisher = Bin::connect(broker.addr);
    let mut consumer = Bin::connect(broker.addr);
    assert_eq!(consumer.call(&create("t", 1)), Response::Ok);
    assert_eq!(consumer.call(&subscribe("t", "g", 100)), Response::Subscribed { partitions: 1 });
    let reply = publisher.call(&publish("t", (0..10).map(|i| format!("r{i}"))));
    let Response::Published(placements) = reply else { panic!("{reply:?}") };
    assert_eq!(
        placements.iter().map(|p| p.offset).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    let got = consumer.collect(10, WAIT);
    assert_eq!(
        got.iter().map(|d| d.value.clone()).collect::<Vec<_>>(),
        (0..10).map(|i| format!("r{i}")).collect::<Vec<_>>()
    );
    assert_eq!(consumer.call(&ack_all("t", "g", &got)), Response::Ok);
}

#[test]
fn text_publish_reaches_a_text_subscriber_and_a_binary_one() {
    let broker = start_broker(|_| {});
    let mut typed = Text::connect(broker.addr);
    let mut bin = Bin::connect(broker.addr);
    typed.send(b"SUB telemetry people earliest\r\n");
    assert_eq!(typed.reply(), TextReply::Ok("16".into()));
    assert_eq!(
        bin.call(&subscribe("telemetry", "machines", 10)),
        Response::Subscribed { partitions: 16 }
    );
    let mut publisher = Text::connect(broker.addr);
    publisher.send(b"PUB telemetry gpu-0 5\r\nhello\r\n");
    let TextReply::Ok(placement) = publisher.reply() else { panic!() };
    let partition: u32 = placement.split(' ').next().unwrap().parse().unwrap();
    assert_eq!(partition, mq_protocol::hash::partition_for_key(b"gpu-0", 16));
    let TextReply::Msg { topic, delivery } = typed.reply() else { panic!() };
    assert_eq!(topic, "telemetry");
    assert_eq!(&delivery.value[..], b"hello");
    assert_eq!(delivery.key.as_deref(), Some(&b"gpu-0"[..]));
    typed.send(format!("ACK telemetry people {partition} 0\r\n").as_bytes());
    assert_eq!(typed.reply(), TextReply::Ok(String::new()));
    let got = bin.collect(1, WAIT);
    assert_eq!(&got[0].value[..], b"hello");
}

#[test]
fn two_groups_each_get_every_record() {
    let broker = start_broker(|_| {});
    let mut a = Bin::connect(broker.addr);
    let mut b = Bin::connect(broker.addr);
    a.call(&subscribe("t", "a", 1000));
    b.call(&subscribe("t", "b", 1000));
    Bin::connect(broker.addr).call(&publish("t", (0..100).map(|i| i.to_string())));
    let values =
        |got: Vec<mq_protocol::Delivery>| got.into_iter().map(|d| d.value).collect::<BTreeSet<_>>();
    assert_eq!(values(a.collect(100, WAIT)).len(), 100);
    assert_eq!(values(b.collect(100, WAIT)).len(), 100);
}

#[test]
fn a_leaving_member_hands_its_partitions_and_unacked_records_to_the_other() {
    let broker = start_broker(|_| {});
    let mut one = Bin::connect(broker.addr);
    let mut two = Bin::connect(broker.addr);
    one.call(&create("t", 4));
    one.call(&subscribe("t", "g", 100));
    two.call(&subscribe("t", "g", 100));
    Bin::connect(broker.addr).call(&publish("t", (0..40).map(|i| i.to_string())));
    let got_one = one.collect(20, WAIT);
    let got_two = two.collect(20, WAIT);
    assert_eq!(got_one.len(), 20);
    assert_eq!(got_two.len(), 20);
    let parts_one: BTreeSet<u32> = got_one.iter().map(|d| d.partition).collect();
    let parts_two: BTreeSet<u32> = got_two.iter().map(|d| d.partition).collect();
    assert!(parts_one.is_disjoint(&parts_two), "{parts_one:?} vs {parts_two:?}");
    two.call(&ack_all("t", "g", &got_two));
    one.call(&ack_all("t", "g", &got_one[..5]));
    drop(one);
    let handed_over = two.collect(15, WAIT);
    assert_eq!(handed_over.len(), 15);
    assert!(handed_over.iter().all(|d| d.attempt == 2));
    let unacked: BTreeSet<_> = got_one[5..].iter().map(|d| (d.partition, d.offset)).collect();
    assert_eq!(
        handed_over.iter().map(|d| (d.partition, d.offset)).collect::<BTreeSet<_>>(),
        unacked
    );
    two.call(&publish("t", (0..8).map(|i| i.to_string())));
    assert_eq!(two.collect(8, WAIT).len(), 8, "the remaining member now owns every partition");
}

#[test]
fn unacked_records_come_back_after_the_ack_timeout_and_after_nack() {
    let broker = start_broker(|c| c.core.ack_timeout = Duration::from_millis(300));
    let mut c = Bin::connect(broker.addr);
    c.call(&create("t", 1));
    c.call(&subscribe("t", "g", 10));
    c.call(&publish("t", ["a".to_string(), "b".to_string()]));
    let first = c.collect(2, WAIT);
    assert_eq!(first.len(), 2);
    c.call(&ack_all("t", "g", &first[1..]));
    let again = c.collect(1, WAIT);
    assert_eq!((again[0].offset, again[0].attempt), (0, 2), "redelivered after the timeout");
    let nack = Request::Nack {
        topic: "t".into(),
        group: "g".into(),
        delay_ms: 0,
        ranges: vec![OffsetRange { partition: 0, first: 0, last: 0 }],
    };
    assert_eq!(c.call(&nack), Response::Ok);
    let third = c.collect(1, WAIT);
    assert_eq!((third[0].offset, third[0].attempt), (0, 3), "redelivered at once after NACK");
}

#[test]
fn a_record_never_acked_is_dead_lettered_after_max_deliveries() {
    let broker = start_broker(|c| {
        c.core.ack_timeout = Duration::from_millis(100);
        c.core.max_deliveries = 3;
    });
    let mut c = Bin::connect(broker.addr);
    let mut dlq = Bin::connect(broker.addr);
    c.call(&create("t", 1));
    c.call(&subscribe("t", "g", 10));
    dlq.call(&subscribe("t.dlq", "ops", 10));
    c.call(&publish("t", ["poison".to_string()]));
    // Alive (a PING after each delivery) but never acking: a member that sent nothing at all
    // would be taken out of the group instead (IDLE_TIMEOUT).
    let attempts: Vec<u32> = (0..3)
        .map(|_| {
            let attempt = c.collect(1, WAIT)[0].attempt;
            assert_eq!(c.call(&Request::Ping), Response::Pong);
            attempt
        })
        .collect();
    assert_eq!(attempts, vec![1, 2, 3]);
    let dead = dlq.collect(1, WAIT);
    assert_eq!(&dead[0].value[..], b"DLQ t 0 0 3 ack_timeout\npoison");
    assert!(c.collect(1, Duration::from_millis(400)).is_empty(), "no fourth delivery");
}

#[test]
fn credit_stops_deliveries_until_an_ack_frees_it() {
    let broker = start_broker(|_| {});
    let mut c = Bin::connect(broker.addr);
    c.call(&create("t", 1));
    c.call(&subscribe("t", "g", 3));
    c.call(&publish("t", (0..10).map(|i| i.to_string())));
    let first = c.collect(10, Duration::from_millis(500));
    assert_eq!(first.len(), 3, "credit 3 allows three records in flight");
    c.call(&ack_all("t", "g", &first[..2]));
    let more = c.collect(10, Duration::from_millis(500));
    assert_eq!(more.iter().map(|d| d.offset).collect::<Vec<_>>(), vec![3, 4]);
}

#[test]
fn ack_of_an_offset_never_delivered_is_not_in_flight_and_the_connection_stays_open() {
    let broker = start_broker(|_| {});
    let mut c = Bin::connect(broker.addr);
    c.call(&subscribe("t", "g", 3));
    let ack = Request::Ack {
        topic: "t".into(),
        group: "g".into(),
        ranges: vec![OffsetRange { partition: 0, first: 12345, last: 12345 }],
    };
    let Response::Error { code, .. } = c.call(&ack) else { panic!() };
    assert_eq!(code, ErrorCode::NOT_IN_FLIGHT);
    assert_eq!(c.call(&Request::Ping), Response::Pong);
}

#[test]
fn admin_requests_describe_topics_groups_health_and_stats() {
    use mq_protocol::admin::{GroupsReply, HealthReply, InfoReply, StatsReply, TopicsReply};
    let broker = start_broker(|_| {});
    let mut c = Bin::connect(broker.addr);
    c.call(&create("metrics", 2));
    c.call(&subscribe("metrics", "collectors", 1));
    c.call(&publish("metrics", ["a".to_string(), "b".to_string(), "c".to_string()]));
    assert_eq!(c.collect(1, WAIT).len(), 1);
    let Response::Info(json) = c.call(&Request::Info) else { panic!() };
    let info: InfoReply = serde_json::from_slice(&json).unwrap();
    assert_eq!((info.server.as_str(), info.protocol, info.partitions_default), ("mqd", 1, 16));
    let Response::Health(json) = c.call(&Request::Health) else { panic!() };
    let health: HealthReply = serde_json::from_slice(&json).unwrap();
    assert_eq!(health.status, "ok");
    let Response::Topics(json) = c.call(&Request::Topics) else { panic!() };
    let topics: TopicsReply = serde_json::from_slice(&json).unwrap();
    assert_eq!(topics.topics.len(), 1);
    assert_eq!((topics.topics[0].partitions, topics.topics[0].records), (2, 3));
    let Response::Groups(json) = c.call(&Request::Groups) else { panic!() };
    let groups: GroupsReply = serde_json::from_slice(&json).unwrap();
    assert_eq!(
        (groups.groups[0].members, groups.groups[0].lag, groups.groups[0].in_flight),
        (1, 3, 1)
    );
    let Response::Stats(json) = c.call(&Request::Stats) else { panic!() };
    let stats: StatsReply = serde_json::from_slice(&json).unwrap();
    assert_eq!(stats.topics[0].records_in, 3);
    assert_eq!(stats.topics[0].records_out, 1);
    let g = &stats.groups[0];
    assert_eq!(g.members[0].paused.as_deref(), Some("credit"), "credit 1 is used up");
    assert_eq!(g.partitions.iter().map(|p| p.lag).sum::<u64>(), 3);
}

#[test]
fn requests_sent_just_before_the_peer_half_closes_still_get_their_replies() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let disk = mq_broker::event_loop::Running::start(mq_broker::config::Config::disk(
        "127.0.0.1:0".parse().unwrap(),
        dir.path(),
    ))
    .unwrap();
    let memory = start_broker(|_| {});
    for i in 0..40 {
        let broker = if i % 2 == 0 { &memory } else { &disk };
        let mut s = std::net::TcpStream::connect(broker.addr).unwrap();
        s.write_all(b"PING\r\nPUB t 5\r\nhello\r\n").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("+PONG\r\n+OK "), "{out:?}");
    }
}
