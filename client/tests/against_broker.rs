//! The client against a real broker (in-process, memory storage, real sockets on
//! 127.0.0.1): publish, consume, acknowledge, settle, admin calls, and typed errors.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{client_config, dead_addr, start_broker};
use mq_client::protocol::hash::partition_for_key;
use mq_client::{
    Client, ClientError, ConsumerConfig, ErrorCode, Message, ProducerConfig, Record, StartPosition,
    TopicSettings,
};

const WAIT: Duration = Duration::from_secs(10);

fn earliest(credit: u32) -> ConsumerConfig {
    ConsumerConfig { start: StartPosition::Earliest, credit, ack_batch: 0, ephemeral: false }
}

/// Polls `consumer` until `n` messages arrived (acking each) or `WAIT` passed.
fn consume(consumer: &mut mq_client::Consumer, n: usize) -> Vec<Message> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        for m in consumer.poll(Duration::from_millis(100)).unwrap() {
            consumer.ack(&m).unwrap();
            got.push(m);
        }
    }
    got
}

/// Goal: the basic round trip. Method: publish 2,000 keyed records through the batching
/// producer, check every outcome (keyed partition, dense offsets per partition), consume
/// them all with a small credit (so only prompt acks keep the pipeline going), and check
/// the broker's group counters: nothing in flight, nothing lagging.
#[test]
fn published_records_come_back_once_and_are_acknowledged() {
    let broker = start_broker(|_| {});
    let mut client = Client::connect(&[broker.addr], client_config(WAIT)).unwrap();
    let mut producer = client.producer(ProducerConfig::default()).unwrap();
    let n = 2000;
    let mut seqs = Vec::new();
    for i in 0..n {
        let key = format!("gpu-{}", i % 7);
        seqs.push(
            producer.send("round", Some(key.as_bytes()), format!("v{i}").as_bytes()).unwrap(),
        );
    }
    let outcomes = producer.flush().unwrap();
    assert_eq!(outcomes.len(), n);
    let mut per_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (i, outcome) in outcomes.iter().enumerate() {
        assert_eq!(outcome.seq, seqs[i], "outcomes come in send order for one topic");
        let placement = outcome.result.clone().unwrap();
        let key = format!("gpu-{}", i % 7);
        assert_eq!(placement.partition, partition_for_key(key.as_bytes(), 16));
        per_partition.entry(placement.partition).or_default().push(placement.offset);
    }
    for offsets in per_partition.values() {
        assert_eq!(*offsets, (0..offsets.len() as u64).collect::<Vec<_>>());
    }

    let mut consumer = client.subscribe("round", "readers", earliest(32)).unwrap();
    assert_eq!(consumer.partitions(), 16);
    let got = consume(&mut consumer, n);
    assert_eq!(got.len(), n);
    let values: HashSet<Bytes> = got.iter().map(|m| m.value.clone()).collect();
    assert_eq!(values.len(), n, "no duplicates without failures");
    assert!(got.iter().all(|m| m.attempt == 1 && &*m.topic == "round" && m.key.is_some()));
    consumer.commit().unwrap();
    let stats = consumer.stats();
    assert_eq!((stats.records_received, stats.records_acked, stats.ack_errors), (2000, 2000, 0));

    let group = client.stats().unwrap().groups.into_iter().find(|g| g.group == "readers").unwrap();
    assert_eq!((group.lag, group.in_flight, group.acked), (0, 0, 2000));
}

/// Goal: the blocking batch call returns one placement per record, in order.
#[test]
fn publish_batch_returns_placements_in_order() {
    let broker = start_broker(|_| {});
    let client = Client::connect(&[broker.addr], client_config(WAIT)).unwrap();
    let mut producer = client.producer(ProducerConfig::default()).unwrap();
    let records: Vec<Record> =
        (0..40).map(|i| Record { key: None, value: Bytes::from(format!("r{i}")) }).collect();
    let placements = producer.publish_batch("batch", &records).unwrap();
    assert_eq!(placements.len(), 40);
    // Unkeyed records go round-robin over 16 partitions from partition 0.
    for (i, p) in placements.iter().enumerate() {
        assert_eq!((p.partition, p.offset), ((i % 16) as u32, (i / 16) as u64));
    }
}

/// Goal: requests the broker would refuse never reach the wire, and leave the producer
/// usable. Method: a record above the broker's frame limit, a bad key and a bad topic are
/// typed errors at `send`; a good record after them is stored.
#[test]
fn invalid_records_are_refused_before_sending() {
    let broker = start_broker(|c| c.core.frame_body_bytes_max = 8192);
    let client = Client::connect(&[broker.addr], client_config(WAIT)).unwrap();
    let mut producer = client.producer(ProducerConfig::default()).unwrap();
    assert_eq!(producer.record_bytes_max(), 8192 - 577, "the broker's limit, read from INFO");
    let big = vec![b'x'; 8192 - 576];
    let e = producer.send("t", None, &big).unwrap_err();
    assert!(matches!(e, ClientError::InvalidRequest(_)), "{e}");
    let e = producer.send("t", Some(b"has space"), b"v").unwrap_err();
    assert!(matches!(e, ClientError::InvalidRequest(_)), "{e}");
    let e = producer.send("no/slash", None, b"v").unwrap_err();
    assert!(matches!(e, ClientError::InvalidRequest(_)), "{e}");
    let fits = vec![b'x'; 8192 - 577];
    producer.send("t", None, &fits).unwrap();
    producer.send("t", None, &fits).unwrap();
    let outcomes = producer.flush().unwrap();
    assert_eq!(outcomes.len(), 2, "only the valid records got sequence numbers");
    for o in &outcomes {
        assert!(o.result.is_ok(), "{:?}", o.result);
    }
}

/// Goal: a batch the broker refuses gives each of its records a typed error, and other
/// batches are unaffected. Method: a broker that allows one topic; records for a second
/// topic fail with `TOO_MANY_TOPICS`.
#[test]
fn a_refused_batch_gives_each_record_the_broker_error() {
    let broker = start_broker(|c| c.core.topics_max = 1);
    let client = Client::connect(&[broker.addr], client_config(WAIT)).unwrap();
    let mut producer = client.producer(ProducerConfig::default()).unwrap();
    for i in 0..10 {
        producer.send("one", None, format!("{i}").as_bytes()).unwrap();
        producer.send("two", None, format!("{i}").as_bytes()).unwrap();
    }
    let outcomes = producer.flush().unwrap();
    assert_eq!(outcomes.len(), 20);
    let (ok, failed): (Vec<_>, Vec<_>) = outcomes.iter().partition(|o| o.result.is_ok());
    assert_eq!((ok.len(), failed.len()), (10, 10));
    for o in failed {
        assert_eq!(o.seq % 2, 1, "the second topic's records failed");
        assert_eq!(o.result.as_ref().unwrap_err().code(), Some(ErrorCode::TOO_MANY_TOPICS));
    }
    assert_eq!(producer.stats().records_failed, 10);
}

/// Goal: NACK redelivers with a higher attempt; REJECT sends to the dead-letter topic.
#[test]
fn nack_redelivers_and_reject_dead_letters() {
    let broker = start_broker(|_| {});
    let mut client = Client::connect(&[broker.addr], client_config(WAIT)).unwrap();
    let mut producer = client.producer(ProducerConfig::default()).unwrap();
    producer.send("settle", None, b"again").unwrap();
    producer.send("settle", None, b"poison").unwrap();
    producer.flush().unwrap();
    let mut consumer = client.subscribe("settle", "g", earliest(16)).unwrap();
    let first = consume_n_no_ack(&mut consumer, 2);
    for m in &first {
        if m.value == "again" {
            consumer.nack(m, Duration::ZERO).unwrap();
        } else {
            consumer.reject(m).unwrap();
        }
    }
    let again = consume_n_no_ack(&mut consumer, 1);
    assert_eq!((again[0].value.as_ref(), again[0].attempt), (&b"again"[..], 2));
    consumer.ack(&again[0]).unwrap();
    consumer.commit().unwrap();
    let topics = client.topics().unwrap().topics;
    let dlq = topics.iter().find(|t| t.name == "settle.dlq").expect("dead-letter topic");
    assert_eq!(dlq.records, 1);
}

fn consume_n_no_ack(consumer: &mut mq_client::Consumer, n: usize) -> Vec<Message> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        got.extend(consumer.poll(Duration::from_millis(100)).unwrap());
    }
    assert_eq!(got.len(), n);
    got
}

/// Goal: every admin call returns its typed document, and broker errors are typed.
#[test]
fn admin_calls_return_typed_documents() {
    let broker = start_broker(|_| {});
    let mut client = Client::connect(&[broker.addr], client_config(WAIT)).unwrap();
    assert_eq!(client.broker_info().unwrap().server, "mqd");
    client.ping().unwrap();
    let info = client.info().unwrap();
    assert_eq!((info.protocol, info.storage.as_str()), (1, "memory"));
    assert_eq!(client.health().unwrap().status, "ok");
    let settings =
        TopicSettings { topic: "made".into(), partitions: 4, retention_bytes: 0, retention_ms: 0 };
    client.create_topic(&settings).unwrap();
    client.create_topic(&settings).unwrap();
    let other = TopicSettings { partitions: 5, ..settings };
    let e = client.create_topic(&other).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TOPIC_EXISTS), "{e}");
    let topics = client.topics().unwrap().topics;
    assert_eq!(topics.iter().find(|t| t.name == "made").unwrap().partitions, 4);
    let _consumer = client.subscribe("made", "watchers", earliest(8)).unwrap();
    let groups = client.groups().unwrap().groups;
    assert!(groups.iter().any(|g| g.group == "watchers" && g.members == 1));
    let stats = client.stats().unwrap();
    assert!(stats.connections >= 2);
}

/// Goal: several addresses are tried in order, and no reachable one is a clear error.
#[test]
fn connect_tries_each_address_and_names_them_when_none_answers() {
    let broker = start_broker(|_| {});
    let dead = dead_addr();
    let mut client = Client::connect(&[dead, broker.addr], client_config(WAIT)).unwrap();
    client.ping().unwrap();
    let e = Client::connect(&[dead], client_config(WAIT)).unwrap_err();
    assert!(matches!(e, ClientError::Unreachable { .. }));
    assert_eq!(e.to_string(), format!("cannot reach broker at {dead}: connection refused"));
    let e = Client::connect(&["no-such-host.invalid:1"], client_config(WAIT)).unwrap_err();
    assert!(matches!(e, ClientError::Unreachable { .. }), "{e}");
}

/// Goal (issue 13): an ephemeral consumer's group is gone once it closes, a durable one's
/// stays until `delete_group`, and each refusal has its named code.
#[test]
fn an_ephemeral_consumer_leaves_no_group_and_delete_group_removes_a_durable_one() {
    let broker = start_broker(|_| {});
    let mut client = Client::connect(&[broker.addr], client_config(WAIT)).unwrap();
    let mut producer = client.producer(ProducerConfig::default()).unwrap();
    producer.send("look", None, b"one").unwrap();
    producer.flush().unwrap();

    let config = ConsumerConfig { ephemeral: true, ..earliest(10) };
    let mut look = client.subscribe("look", "glance", config.clone()).unwrap();
    assert_eq!(consume(&mut look, 1).len(), 1);
    let listed = client.groups().unwrap().groups;
    assert_eq!((listed[0].group.as_str(), listed[0].kind.as_str()), ("glance", "ephemeral"));
    let refused = client.subscribe("look", "glance", earliest(10)).unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::GROUP_KIND_MISMATCH), "{refused}");
    look.close().unwrap();
    assert!(client.groups().unwrap().groups.is_empty(), "the ephemeral group went with it");

    let durable = client.subscribe("look", "keep", earliest(10)).unwrap();
    let busy = client.delete_group("look", "keep").unwrap_err();
    assert_eq!(busy.code(), Some(ErrorCode::GROUP_ACTIVE), "{busy}");
    durable.close().unwrap();
    client.delete_group("look", "keep").unwrap();
    assert!(client.groups().unwrap().groups.is_empty());
    let gone = client.delete_group("look", "keep").unwrap_err();
    assert_eq!(gone.code(), Some(ErrorCode::NO_SUCH_GROUP), "{gone}");
    let bad = client.delete_group("look", "no/such").unwrap_err();
    assert!(matches!(bad, ClientError::InvalidRequest(_)), "{bad}");
}
