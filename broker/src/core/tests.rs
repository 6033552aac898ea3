//! Core tests with fake time: no sockets, no sleeps. Each builds a `Core`, feeds it requests
//! and a chosen `Now`, and asserts on the outputs.

use std::time::{Duration, Instant};

use bytes::Bytes;
use mq_protocol::{
    Delivery, ErrorCode, GroupKind, OffsetRange, Record, Request, Response, StartPosition,
};

use super::*;
use crate::storage::memory::MemoryLog;
use crate::storage::{PartitionLog, TopicMeta};

#[derive(Debug)]
struct Mem;

impl Storage for Mem {
    fn load(
        &mut self,
    ) -> Result<(Vec<crate::storage::LoadedTopic>, Option<Vec<u8>>), StorageError> {
        Ok((Vec::new(), None))
    }

    fn create_topic(
        &mut self,
        _: &str,
        meta: TopicMeta,
    ) -> Result<Vec<Box<dyn PartitionLog>>, StorageError> {
        Ok((0..meta.partitions)
            .map(|_| Box::new(MemoryLog::new()) as Box<dyn PartitionLog>)
            .collect())
    }

    fn save_checkpoint(&mut self, _: &[u8]) -> Result<(), StorageError> {
        Ok(())
    }

    fn mark_clean(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}

struct Harness {
    core: Core,
    base: Instant,
    now_ms: u64,
    /// Wall-clock milliseconds at `base`.
    wall_base_ms: u64,
}

impl Harness {
    fn new(config: CoreConfig) -> Harness {
        let base = Instant::now();
        let core =
            Core::new(config, Box::new(Mem), Now { mono: base, wall_ms: 1_000_000 }).unwrap();
        Harness { core, base, now_ms: 0, wall_base_ms: 1_000_000 }
    }

    fn with_partitions(p: u32) -> Harness {
        Harness::new(CoreConfig { partitions_default: p, ..CoreConfig::default() })
    }

    fn now(&self) -> Now {
        Now {
            mono: self.base + Duration::from_millis(self.now_ms),
            wall_ms: self.wall_base_ms + self.now_ms,
        }
    }

    fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
        let now = self.now();
        self.core.tick(now);
    }

    fn connect(&mut self, conn: ConnId) {
        let now = self.now();
        self.core.connect(conn, format!("test:{conn}"), now);
    }

    /// Sends a request and returns the reply to it (pushes are kept for `deliveries`).
    #[track_caller]
    fn request(&mut self, conn: ConnId, request: Request) -> Response {
        let now = self.now();
        self.core.handle(conn, 7, request, now);
        let outputs = self.core.take_outputs();
        let mut reply = None;
        for o in outputs {
            match o {
                Output::Send { request_id: 7, response, .. } => reply = Some(response),
                Output::Close { code, message, .. } => {
                    reply = Some(Response::Error { code, message })
                }
                other => panic!("unexpected output {other:?}"),
            }
        }
        reply.expect("no reply")
    }

    fn publish(&mut self, conn: ConnId, topic: &str, n: usize) {
        let records =
            (0..n).map(|i| Record { key: None, value: Bytes::from(format!("v{i}")) }).collect();
        let reply = self.request(conn, Request::Publish { topic: topic.into(), records });
        assert!(matches!(reply, Response::Published(ref p) if p.len() == n), "{reply:?}");
    }

    fn subscribe(&mut self, conn: ConnId, topic: &str, group: &str, credit: u32) {
        let reply = self.request(
            conn,
            Request::Subscribe {
                topic: topic.into(),
                group: group.into(),
                start: StartPosition::Earliest,
                credit,
                kind: GroupKind::Durable,
            },
        );
        assert!(matches!(reply, Response::Subscribed { .. }), "{reply:?}");
    }

    /// Runs the delivery pump and returns what each connection got.
    fn pump(&mut self) -> Vec<(ConnId, Delivery)> {
        let now = self.now();
        self.core.pump(now);
        let mut got = Vec::new();
        for o in self.core.take_outputs() {
            if let Output::Send { conn, request_id: 0, response: Response::Deliver(d) } = o {
                got.extend(d.records.into_iter().map(|r| (conn, r)));
            }
        }
        got
    }

    fn ack(&mut self, conn: ConnId, topic: &str, group: &str, d: &Delivery) -> Response {
        let ranges = vec![OffsetRange { partition: d.partition, first: d.offset, last: d.offset }];
        self.request(conn, Request::Ack { topic: topic.into(), group: group.into(), ranges })
    }
}

#[track_caller]
fn assert_error(reply: Response, code: ErrorCode) {
    match reply {
        Response::Error { code: c, .. } => assert_eq!(c, code),
        other => panic!("expected {code}, got {other:?}"),
    }
}

#[test]
fn published_records_are_delivered_once_and_ack_moves_the_committed_offset() {
    let mut h = Harness::with_partitions(1);
    h.connect(1);
    h.publish(1, "t", 3);
    h.subscribe(1, "t", "g", 100);
    let got = h.pump();
    assert_eq!(got.iter().map(|(_, d)| d.offset).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert!(got.iter().all(|(_, d)| d.attempt == 1));
    assert!(h.pump().is_empty(), "nothing is delivered twice without a reason");
    assert_eq!(h.core.committed("t", "g", 0), Some(0));
    assert_eq!(h.ack(1, "t", "g", &got[1].1), Response::Ok);
    assert_eq!(h.core.committed("t", "g", 0), Some(0), "offset 0 still unacked");
    assert_eq!(h.ack(1, "t", "g", &got[0].1), Response::Ok);
    assert_eq!(h.core.committed("t", "g", 0), Some(2));
}

#[test]
fn every_group_sees_every_record() {
    let mut h = Harness::with_partitions(4);
    for c in 1..=3 {
        h.connect(c);
    }
    h.subscribe(1, "t", "a", 100);
    h.subscribe(2, "t", "b", 100);
    h.publish(3, "t", 10);
    let got = h.pump();
    assert_eq!(got.iter().filter(|(c, _)| *c == 1).count(), 10);
    assert_eq!(got.iter().filter(|(c, _)| *c == 2).count(), 10);
}

#[test]
fn members_split_partitions_and_a_leaver_hands_over_its_unacked_records() {
    let mut h = Harness::with_partitions(4);
    h.connect(1);
    h.connect(2);
    h.subscribe(1, "t", "g", 100);
    h.subscribe(2, "t", "g", 100);
    h.publish(1, "t", 8);
    let got = h.pump();
    let to_1: Vec<_> = got.iter().filter(|(c, _)| *c == 1).map(|(_, d)| d.clone()).collect();
    let to_2: Vec<_> = got.iter().filter(|(c, _)| *c == 2).map(|(_, d)| d.clone()).collect();
    assert_eq!(to_1.len(), 4);
    assert_eq!(to_2.len(), 4);
    assert!(to_1.iter().all(|d| d.partition % 2 == 0));
    assert!(to_2.iter().all(|d| d.partition % 2 == 1));
    h.ack(1, "t", "g", &to_1[0]);
    let now = h.now();
    h.core.disconnect(1, now);
    let again = h.pump();
    assert_eq!(again.len(), 3, "the three unacked records of member 1 go to member 2");
    assert!(again.iter().all(|(c, d)| *c == 2 && d.attempt == 2));
}

#[test]
fn an_unacked_record_is_redelivered_after_the_ack_timeout() {
    let mut h = Harness::new(CoreConfig {
        partitions_default: 1,
        ack_timeout: Duration::from_millis(5000),
        ..CoreConfig::default()
    });
    h.connect(1);
    h.subscribe(1, "t", "g", 10);
    h.publish(1, "t", 1);
    assert_eq!(h.pump().len(), 1);
    h.advance(4999);
    assert!(h.pump().is_empty(), "not before the timeout");
    // A sign of life: a member that sends nothing at all is taken out of the group instead.
    assert_eq!(h.request(1, Request::Ping), Response::Pong);
    h.advance(1);
    let again = h.pump();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1.attempt, 2);
}

#[test]
fn per_group_ack_timeouts_override_the_default() {
    let mut config = CoreConfig { partitions_default: 1, ..CoreConfig::default() };
    config.group_ack_timeouts.insert("fast".into(), Duration::from_millis(100));
    let mut h = Harness::new(config);
    h.connect(1);
    h.connect(2);
    h.subscribe(1, "t", "fast", 10);
    h.subscribe(2, "t", "slow", 10);
    h.publish(1, "t", 1);
    assert_eq!(h.pump().len(), 2);
    h.advance(50);
    assert_eq!(h.request(1, Request::Ping), Response::Pong);
    h.advance(50);
    let again = h.pump();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, 1);
}

#[test]
fn nack_redelivers_now_or_after_its_delay() {
    let mut h = Harness::with_partitions(1);
    h.connect(1);
    h.subscribe(1, "t", "g", 10);
    h.publish(1, "t", 2);
    let got = h.pump();
    let range = |d: &Delivery| vec![OffsetRange { partition: 0, first: d.offset, last: d.offset }];
    let r = h.request(
        1,
        Request::Nack {
            topic: "t".into(),
            group: "g".into(),
            delay_ms: 0,
            ranges: range(&got[0].1),
        },
    );
    assert_eq!(r, Response::Ok);
    let r = h.request(
        1,
        Request::Nack {
            topic: "t".into(),
            group: "g".into(),
            delay_ms: 300,
            ranges: range(&got[1].1),
        },
    );
    assert_eq!(r, Response::Ok);
    let now_again = h.pump();
    assert_eq!(
        now_again.iter().map(|(_, d)| (d.offset, d.attempt)).collect::<Vec<_>>(),
        vec![(0, 2)]
    );
    h.advance(299);
    assert!(h.pump().is_empty());
    h.advance(1);
    let later = h.pump();
    assert_eq!(later.iter().map(|(_, d)| (d.offset, d.attempt)).collect::<Vec<_>>(), vec![(1, 2)]);
}

#[test]
fn a_record_is_dead_lettered_after_max_deliveries_with_its_attempt_count() {
    let mut h = Harness::new(CoreConfig {
        partitions_default: 1,
        max_deliveries: 3,
        ack_timeout: Duration::from_millis(100),
        ..CoreConfig::default()
    });
    h.connect(1);
    h.connect(2);
    h.subscribe(1, "t", "g", 10);
    h.subscribe(2, "t.dlq", "watch", 10);
    h.publish(1, "t", 1);
    for attempt in 1..=3 {
        let got = h.pump();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.attempt, attempt);
        // Alive (it sends requests) but never acks: a poison record.
        h.advance(50);
        assert_eq!(h.request(1, Request::Ping), Response::Pong);
        h.advance(50);
    }
    let dead = h.pump();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, 2, "the dead letter reaches the dlq subscriber");
    assert_eq!(&dead[0].1.value[..], b"DLQ t 0 0 3 ack_timeout\nv0");
    let stats = h.core.stats(h.now());
    let g = stats.groups.iter().find(|g| g.group == "g").unwrap();
    assert_eq!(g.dead_lettered, 1);
    assert_eq!(g.lag, 0, "a dead-lettered record no longer counts as lag");
}

#[test]
fn reject_sends_a_record_to_the_dead_letter_topic_at_once() {
    let mut h = Harness::with_partitions(1);
    h.connect(1);
    h.subscribe(1, "t", "g", 10);
    h.publish(1, "t", 1);
    let got = h.pump();
    let ranges = vec![OffsetRange { partition: 0, first: got[0].1.offset, last: got[0].1.offset }];
    assert_eq!(
        h.request(1, Request::Reject { topic: "t".into(), group: "g".into(), ranges }),
        Response::Ok
    );
    let t = h.core.stats(h.now()).topics.into_iter().find(|t| t.name == "t.dlq").unwrap();
    assert_eq!(t.records_in, 1);
}

#[test]
fn credit_stops_deliveries_until_acks_free_it() {
    let mut h = Harness::with_partitions(1);
    h.connect(1);
    h.subscribe(1, "t", "g", 2);
    h.publish(1, "t", 5);
    let first = h.pump();
    assert_eq!(first.len(), 2);
    assert!(h.pump().is_empty(), "credit of 2 is used up");
    h.ack(1, "t", "g", &first[0].1);
    let next = h.pump();
    assert_eq!(next.iter().map(|(_, d)| d.offset).collect::<Vec<_>>(), vec![2]);
    let r = h.request(1, Request::Credit { topic: "t".into(), group: "g".into(), credit: 10 });
    assert_eq!(r, Response::Ok);
    assert_eq!(h.pump().len(), 2);
}

#[test]
fn a_paused_connection_gets_no_deliveries_until_it_drains() {
    let mut h = Harness::with_partitions(1);
    h.connect(1);
    h.subscribe(1, "t", "g", 10);
    h.core.set_paused(1, true);
    h.publish(1, "t", 1);
    assert!(h.pump().is_empty());
    h.core.set_paused(1, false);
    assert_eq!(h.pump().len(), 1);
}

#[test]
fn acking_an_offset_never_delivered_is_a_named_error() {
    let mut h = Harness::with_partitions(2);
    h.connect(1);
    h.subscribe(1, "t", "g", 10);
    let ranges = vec![OffsetRange { partition: 0, first: 7, last: 7 }];
    assert_error(
        h.request(1, Request::Ack { topic: "t".into(), group: "g".into(), ranges }),
        ErrorCode::NOT_IN_FLIGHT,
    );
    let ranges = vec![OffsetRange { partition: 9, first: 0, last: 0 }];
    assert_error(
        h.request(1, Request::Ack { topic: "t".into(), group: "g".into(), ranges }),
        ErrorCode::NO_SUCH_PARTITION,
    );
    let ranges = vec![OffsetRange { partition: 0, first: 0, last: 0 }];
    assert_error(
        h.request(1, Request::Ack { topic: "t".into(), group: "x".into(), ranges }),
        ErrorCode::NOT_SUBSCRIBED,
    );
}

#[test]
fn a_late_ack_after_timeout_is_accepted_and_cancels_the_redelivery() {
    let mut h = Harness::new(CoreConfig {
        partitions_default: 1,
        ack_timeout: Duration::from_millis(100),
        ..CoreConfig::default()
    });
    h.connect(1);
    h.subscribe(1, "t", "g", 10);
    h.publish(1, "t", 1);
    let got = h.pump();
    h.advance(50);
    assert_eq!(h.request(1, Request::Ping), Response::Pong);
    h.advance(50);
    assert_eq!(h.ack(1, "t", "g", &got[0].1), Response::Ok);
    assert!(h.pump().is_empty());
    assert_eq!(h.core.committed("t", "g", 0), Some(1));
}

#[test]
fn keyed_records_stay_in_one_partition_and_unkeyed_go_round_robin() {
    let mut h = Harness::with_partitions(4);
    h.connect(1);
    let key = Bytes::from_static(b"GPU-5fd4f087-86f3-7a43-b711-4771313afc50");
    let records = (0..5)
        .map(|_| Record { key: Some(key.clone()), value: Bytes::from_static(b"x") })
        .collect();
    let Response::Published(p) = h.request(1, Request::Publish { topic: "t".into(), records })
    else {
        panic!()
    };
    let expected = mq_protocol::hash::partition_for_key(&key, 4);
    assert!(p.iter().all(|pl| pl.partition == expected));
    assert_eq!(p.iter().map(|pl| pl.offset).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    let records = (0..4).map(|_| Record { key: None, value: Bytes::from_static(b"x") }).collect();
    let Response::Published(p) = h.request(1, Request::Publish { topic: "u".into(), records })
    else {
        panic!()
    };
    assert_eq!(p.iter().map(|pl| pl.partition).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
}

#[test]
fn start_latest_skips_what_was_published_before() {
    let mut h = Harness::with_partitions(1);
    h.connect(1);
    h.publish(1, "t", 3);
    let r = h.request(
        1,
        Request::Subscribe {
            topic: "t".into(),
            group: "g".into(),
            start: StartPosition::Latest,
            credit: 10,
            kind: GroupKind::Durable,
        },
    );
    assert_eq!(r, Response::Subscribed { partitions: 1 });
    assert!(h.pump().is_empty());
    h.publish(1, "t", 1);
    assert_eq!(h.pump()[0].1.offset, 3);
}

#[test]
fn a_second_subscription_to_a_topic_on_one_connection_is_refused() {
    let mut h = Harness::with_partitions(1);
    h.connect(1);
    h.subscribe(1, "t", "g", 10);
    let r = h.request(
        1,
        Request::Subscribe {
            topic: "t".into(),
            group: "h".into(),
            start: StartPosition::Earliest,
            credit: 10,
            kind: GroupKind::Durable,
        },
    );
    assert_error(r, ErrorCode::ALREADY_SUBSCRIBED);
}

#[test]
fn limits_on_topics_and_partitions_give_named_errors() {
    let mut h =
        Harness::new(CoreConfig { topics_max: 1, partitions_max: 8, ..CoreConfig::default() });
    h.connect(1);
    let create = |t: &str, p| {
        Request::CreateTopic(CreateTopic {
            topic: t.into(),
            partitions: p,
            retention_bytes: 0,
            retention_ms: 0,
        })
    };
    assert_error(h.request(1, create("a", 9)), ErrorCode::TOO_MANY_PARTITIONS);
    assert_eq!(h.request(1, create("a", 8)), Response::Ok);
    assert_error(h.request(1, create("a", 4)), ErrorCode::TOPIC_EXISTS);
    assert_error(h.request(1, create("b", 1)), ErrorCode::TOO_MANY_TOPICS);
}

#[test]
fn auth_is_required_first_and_checked() {
    let mut h =
        Harness::new(CoreConfig { auth_token: Some("s3cret".into()), ..CoreConfig::default() });
    h.connect(1);
    assert_error(h.request(1, Request::Ping), ErrorCode::AUTH_REQUIRED);
    h.connect(2);
    assert_error(h.request(2, Request::Auth { token: "wrong".into() }), ErrorCode::AUTH_FAILED);
    h.connect(3);
    assert_eq!(h.request(3, Request::Auth { token: "s3cret".into() }), Response::Ok);
    assert_eq!(h.request(3, Request::Ping), Response::Pong);
}

#[test]
fn a_connection_without_auth_is_closed_at_the_deadline() {
    let mut h = Harness::new(CoreConfig {
        auth_token: Some("s3cret".into()),
        auth_timeout: Duration::from_millis(2000),
        ..CoreConfig::default()
    });
    h.connect(1);
    h.advance(1999);
    assert!(h.core.take_outputs().is_empty());
    h.advance(1);
    let out = h.core.take_outputs();
    assert!(matches!(
        out.as_slice(),
        [Output::Close { conn: 1, code: ErrorCode::AUTH_TIMEOUT, .. }]
    ));
}

#[test]
fn retention_moves_a_lagging_group_forward_and_counts_the_loss() {
    let mut h = Harness::new(CoreConfig {
        partitions_default: 1,
        retention: Retention { bytes: 0, ms: 1000 },
        ..CoreConfig::default()
    });
    h.connect(1);
    h.publish(1, "t", 3);
    h.subscribe(1, "t", "g", 10);
    h.now_ms += 2000;
    let now = h.now();
    h.core.apply_retention(now);
    assert!(h.pump().is_empty());
    assert_eq!(h.core.committed("t", "g", 0), Some(3));
}

/// Storage that comes back with one topic of three records and a checkpoint, as a disk
/// broker does after a restart.
#[derive(Debug)]
struct Restarted {
    checkpoint: &'static str,
}

impl Storage for Restarted {
    fn load(
        &mut self,
    ) -> Result<(Vec<crate::storage::LoadedTopic>, Option<Vec<u8>>), StorageError> {
        let mut log = MemoryLog::new();
        for i in 0..3 {
            log.append(1, None, Bytes::from(format!("old{i}")))?;
        }
        let meta = TopicMeta { partitions: 1, retention_bytes: 0, retention_ms: 0 };
        let logs = vec![Box::new(log) as Box<dyn PartitionLog>];
        Ok((vec![("t".into(), meta, logs)], Some(self.checkpoint.as_bytes().to_vec())))
    }

    fn create_topic(
        &mut self,
        topic: &str,
        meta: TopicMeta,
    ) -> Result<Vec<Box<dyn PartitionLog>>, StorageError> {
        Mem.create_topic(topic, meta)
    }

    fn save_checkpoint(&mut self, _: &[u8]) -> Result<(), StorageError> {
        Ok(())
    }

    fn mark_clean(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}

#[test]
fn restored_delivery_counts_past_the_recovered_end_are_dropped() {
    // The checkpoint was written before a power loss that took offsets 3 and 4 from the
    // log: new records get those offsets and must start at attempt 1, while the counts of
    // records still held carry on.
    let storage = Restarted {
        checkpoint: r#"{"version":1,"groups":[{"topic":"t","group":"g","partitions":[{"committed":1,"attempts":[[1,2],[3,4],[4,4]]}]}]}"#,
    };
    let mut h = Harness::new(CoreConfig::default());
    h.core = Core::new(CoreConfig::default(), Box::new(storage), h.now()).unwrap();
    assert_eq!(h.core.committed("t", "g", 0), Some(1));
    h.connect(1);
    h.publish(1, "t", 2);
    h.subscribe(1, "t", "g", 100);
    let got: Vec<(u64, u32)> = h.pump().iter().map(|(_, d)| (d.offset, d.attempt)).collect();
    assert_eq!(got, vec![(1, 3), (2, 1), (3, 1), (4, 1)]);
}

#[test]
fn a_failed_flush_makes_health_degraded_until_one_succeeds() {
    let mut h = Harness::with_partitions(1);
    h.connect(1);
    let status = |h: &mut Harness| match h.request(1, Request::Health) {
        Response::Health(json) => {
            serde_json::from_slice::<mq_protocol::admin::HealthReply>(&json).unwrap()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(status(&mut h).status, "ok");
    h.core.note_flush(Err("Input/output error (os error 5)".into()));
    let degraded = status(&mut h);
    assert_eq!(degraded.status, "degraded");
    assert!(degraded.detail.unwrap().contains("flush to disk failed: Input/output error"));
    h.core.note_flush(Ok(()));
    assert_eq!(status(&mut h).status, "ok");
}

#[test]
fn a_topic_skipped_at_start_is_not_recreated_over_its_records_and_the_broker_goes_on() {
    use crate::storage::disk::DiskOptions;
    use crate::storage::DiskStorage;
    let root = tempfile::tempdir().unwrap();
    let options = DiskOptions { segment_bytes: 64 * 1024, ..DiskOptions::default() };
    let config = CoreConfig { partitions_default: 1, ..CoreConfig::default() };
    let mut h = Harness::new(config.clone());
    let storage = DiskStorage::open(root.path(), options.clone()).unwrap();
    h.core = Core::new(config.clone(), Box::new(storage), h.now()).unwrap();
    h.connect(1);
    h.publish(1, "t", 3);
    h.core.close_storage().unwrap();
    let topic_dir = root.path().join("topics").join("t");
    std::fs::write(topic_dir.join("topic.json"), b"{ damaged").unwrap();

    h = Harness::new(config.clone()); // drops the first core, which unlocks the data directory
    let storage = DiskStorage::open(root.path(), options).unwrap();
    h.core = Core::new(config, Box::new(storage), h.now()).unwrap();
    h.connect(1);
    let refused = |reply: Response| match reply {
        Response::Error { code: ErrorCode::STORAGE_ERROR, message } => {
            assert!(message.contains(&topic_dir.display().to_string()), "{message}");
            assert!(message.contains("or remove the directory"), "{message}");
        }
        other => panic!("expected STORAGE_ERROR, got {other:?}"),
    };
    let records = vec![Record { key: None, value: Bytes::from_static(b"new") }];
    refused(h.request(1, Request::Publish { topic: "t".into(), records }));
    refused(h.request(
        1,
        Request::CreateTopic(CreateTopic {
            topic: "t".into(),
            partitions: 1,
            retention_bytes: 0,
            retention_ms: 0,
        }),
    ));
    refused(h.request(
        1,
        Request::Subscribe {
            topic: "t".into(),
            group: "g".into(),
            start: StartPosition::Earliest,
            credit: 10,
            kind: GroupKind::Durable,
        },
    ));
    assert_eq!(std::fs::read(topic_dir.join("topic.json")).unwrap(), b"{ damaged");
    // The broker goes on: other topics work, and so does "t" once its directory is removed.
    assert_eq!(h.request(1, Request::Ping), Response::Pong);
    h.publish(1, "u", 2);
    std::fs::remove_dir_all(&topic_dir).unwrap();
    let records = vec![Record { key: None, value: Bytes::from_static(b"new") }];
    let Response::Published(p) = h.request(1, Request::Publish { topic: "t".into(), records })
    else {
        panic!()
    };
    assert_eq!(p[0].offset, 0, "a new topic, without the old records");
}

#[test]
fn an_unusable_checkpoint_restores_no_group_and_subscribe_chooses_where_it_starts() {
    for checkpoint in ["{ not json", r#"{"version":2,"groups":[]}"#] {
        let storage = Restarted { checkpoint };
        let mut h = Harness::new(CoreConfig::default());
        h.core = Core::new(CoreConfig::default(), Box::new(storage), h.now()).unwrap();
        assert_eq!(h.core.committed("t", "g", 0), None, "no group restored");
        assert!(h.core.checkpoint_changed().is_some(), "the next checkpoint replaces the file");
        h.connect(1);
        let r = h.request(
            1,
            Request::Subscribe {
                topic: "t".into(),
                group: "late".into(),
                start: StartPosition::Latest,
                credit: 10,
                kind: GroupKind::Durable,
            },
        );
        assert_eq!(r, Response::Subscribed { partitions: 1 });
        assert!(h.pump().is_empty(), "{checkpoint}: the group starts where SUBSCRIBE asked");
        h.connect(2);
        h.subscribe(2, "t", "early", 10);
        assert_eq!(h.pump().len(), 3, "{checkpoint}: from the oldest record when asked");
    }
}

#[test]
fn a_member_that_sends_nothing_while_its_records_time_out_is_closed_and_its_records_go_to_the_others(
) {
    // A stopped consumer (SIGSTOP, a dead peer whose connection stays open) would otherwise
    // keep its partitions and get its records redelivered to itself until dead-lettered.
    let mut h = Harness::new(CoreConfig {
        partitions_default: 2,
        ack_timeout: Duration::from_millis(1000),
        ..CoreConfig::default()
    });
    h.connect(1);
    h.connect(2);
    h.subscribe(1, "t", "g", 10);
    h.subscribe(2, "t", "g", 10);
    h.connect(3);
    h.publish(3, "t", 4);
    let first = h.pump();
    assert_eq!(first.len(), 4);
    let to_live: Vec<Delivery> =
        first.iter().filter(|(c, _)| *c == 2).map(|(_, d)| d.clone()).collect();
    assert_eq!(to_live.len(), 2, "each member owns one partition");
    // Member 2 acks what it got; member 1 says nothing.
    for d in &to_live {
        assert_eq!(h.ack(2, "t", "g", d), Response::Ok);
    }
    h.advance(999);
    assert!(h.core.take_outputs().is_empty(), "nothing happens before the ack timeout");
    h.advance(1);
    let closed: Vec<(ConnId, ErrorCode)> = h
        .core
        .take_outputs()
        .into_iter()
        .filter_map(|o| match o {
            Output::Close { conn, code, .. } => Some((conn, code)),
            _ => None,
        })
        .collect();
    assert_eq!(closed, vec![(1, ErrorCode::IDLE_TIMEOUT)]);
    let again = h.pump();
    assert_eq!(again.len(), 2, "the silent member's records go to the live one: {again:?}");
    assert!(again.iter().all(|(c, d)| *c == 2 && d.attempt == 2));
    h.core.disconnect(1, h.now());
    assert!(h.pump().is_empty(), "closing the connection later hands over nothing twice");
}

#[test]
fn a_member_that_sent_any_request_since_the_delivery_keeps_its_partitions() {
    let mut h = Harness::new(CoreConfig {
        partitions_default: 1,
        ack_timeout: Duration::from_millis(1000),
        ..CoreConfig::default()
    });
    h.connect(1);
    h.subscribe(1, "t", "g", 10);
    h.publish(1, "t", 1);
    assert_eq!(h.pump().len(), 1);
    h.advance(500);
    assert_eq!(h.request(1, Request::Ping), Response::Pong);
    h.advance(500);
    let outputs = h.core.take_outputs();
    assert!(!outputs.iter().any(|o| matches!(o, Output::Close { .. })), "{outputs:?}");
    let again = h.pump();
    assert_eq!(again.len(), 1, "redelivered to the same member after the timeout");
    assert_eq!(again[0].1.attempt, 2);
}

#[test]
fn with_an_idle_timeout_a_connection_that_sends_nothing_is_closed_once() {
    let mut h = Harness::new(CoreConfig {
        idle_timeout: Duration::from_millis(1000),
        ..CoreConfig::default()
    });
    h.connect(1);
    h.advance(999);
    assert!(h.core.take_outputs().is_empty());
    assert_eq!(h.request(1, Request::Ping), Response::Pong);
    h.advance(999);
    assert!(h.core.take_outputs().is_empty(), "a request restarts the count");
    h.advance(1);
    let outputs = h.core.take_outputs();
    assert!(
        matches!(&outputs[..], [Output::Close { conn: 1, code: ErrorCode::IDLE_TIMEOUT, .. }]),
        "{outputs:?}"
    );
    h.advance(100);
    assert!(h.core.take_outputs().is_empty(), "queued once");
}

#[test]
fn without_an_idle_timeout_a_silent_connection_stays() {
    let mut h = Harness::with_partitions(1);
    h.connect(1);
    h.advance(3_600_000);
    assert!(h.core.take_outputs().is_empty());
}

/// RELIABILITY D8: timers run on the monotonic clock. A wall-clock jump (NTP step, an
/// operator's `date -s`) 15 minutes forward or back, with 10 ms of real time passing, neither
/// fires nor delays an ack timeout; the record times out after its monotonic second.
#[test]
fn wall_clock_jumps_fire_no_ack_timeout_and_delay_none() {
    let mut h = Harness::new(CoreConfig {
        partitions_default: 1,
        ack_timeout: Duration::from_millis(1000),
        ..CoreConfig::default()
    });
    h.connect(1);
    h.subscribe(1, "t", "g", 10);
    h.publish(1, "t", 1);
    assert_eq!(h.pump().len(), 1);
    let base = h.now();
    const JUMP_MS: u64 = 900_000;
    for (i, wall_ms) in [base.wall_ms + JUMP_MS, base.wall_ms - JUMP_MS].into_iter().enumerate() {
        let now = Now { mono: base.mono + Duration::from_millis(10 * (i as u64 + 1)), wall_ms };
        h.core.tick(now);
        h.core.pump(now);
        let outputs = h.core.take_outputs();
        assert!(outputs.is_empty(), "a wall-clock jump moved a timer: {outputs:?}");
    }
    // A sign of life, then the monotonic second passes (the wall clock still behind).
    h.now_ms += 500;
    assert_eq!(h.request(1, Request::Ping), Response::Pong);
    let late =
        Now { mono: base.mono + Duration::from_millis(1000), wall_ms: base.wall_ms - JUMP_MS };
    h.core.tick(late);
    h.core.pump(late);
    let again: Vec<u32> = h
        .core
        .take_outputs()
        .into_iter()
        .filter_map(|o| match o {
            Output::Send { response: Response::Deliver(d), .. } => Some(d.records[0].attempt),
            _ => None,
        })
        .collect();
    assert_eq!(again, vec![2], "redelivered once its monotonic timeout passed");
}

mod group_lifecycle;
