//! Reconnects: a broker restarted mid-stream on the same port, and a broker gone for good.
//!
//! The broker keeps records in memory, so a restart loses what the old broker stored; that
//! is expected. What must hold is the client's side of at-least-once: every record handed to
//! the producer comes back exactly once as an outcome (a placement or a typed error), every
//! record the new broker acknowledged reaches the consumer, which subscribes again on its
//! own, and duplicates are allowed (counted and printed).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{client_config, start_broker, start_broker_at};
use mq_client::{
    BackoffConfig, ClientError, Consumer, ConsumerConfig, Producer, ProducerConfig, StartPosition,
};

/// Goal: the client rides through a broker restart. Method: a consumer thread polls and
/// acks, recording every value it sees; the main thread publishes 20,000 records, polling
/// outcomes after every send; after 8,000 records the broker is stopped and, 300 ms later,
/// started again on the same port. Outcomes returned by calls that began after the
/// producer's reconnect were acknowledged by the new broker: each of those records must
/// reach the consumer.
#[test]
fn producer_and_consumer_ride_through_a_broker_restart() {
    let broker = start_broker(|_| {});
    let addr = broker.addr;
    let config = client_config(Duration::from_secs(10));
    let subscription = ConsumerConfig {
        start: StartPosition::Earliest,
        credit: 256,
        ack_batch: 0,
        ephemeral: false,
    };
    let mut consumer =
        Consumer::subscribe(&[addr], "restart", "g", config.clone(), subscription).unwrap();
    let seen: Arc<Mutex<HashMap<Vec<u8>, u32>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for m in consumer.poll(Duration::from_millis(50)).expect("consumer recovers") {
                    *seen.lock().unwrap().entry(m.value.to_vec()).or_default() += 1;
                    consumer.ack(&m).unwrap();
                }
            }
            consumer.stats()
        })
    };

    let mut producer = Producer::connect(&[addr], config, ProducerConfig::default()).unwrap();
    let mut broker = Some(broker);
    let mut restarter = None;
    let mut outcomes = HashMap::new();
    let mut after_restart: Vec<Vec<u8>> = Vec::new();
    let mut values = HashMap::new();
    for i in 0..20_000u64 {
        if i == 8_000 {
            let old = broker.take().unwrap();
            restarter = Some(thread::spawn(move || {
                old.stop().unwrap();
                thread::sleep(Duration::from_millis(300));
                start_broker_at(addr, |_| {})
            }));
        }
        let reconnected = producer.stats().reconnects > 0;
        let value = format!("record-{i}").into_bytes();
        let seq = producer.send("restart", None, &value).expect("producer recovers");
        values.insert(seq, value);
        for o in producer.poll().expect("producer recovers") {
            if reconnected && o.result.is_ok() {
                after_restart.push(values[&o.seq].clone());
            }
            assert!(outcomes.insert(o.seq, o.result).is_none(), "one outcome per record");
        }
        if i % 1000 == 0 {
            thread::sleep(Duration::from_millis(20));
        }
    }
    for o in producer.flush().expect("producer recovers") {
        if o.result.is_ok() {
            after_restart.push(values[&o.seq].clone());
        }
        assert!(outcomes.insert(o.seq, o.result).is_none(), "one outcome per record");
    }
    let _broker = restarter.unwrap().join().unwrap();
    assert_eq!(outcomes.len(), 20_000, "every record got an outcome");
    let failed = outcomes.values().filter(|r| r.is_err()).count();
    assert_eq!(failed, 0, "the backoff bound outlasts the restart");
    assert!(producer.stats().reconnects >= 1);
    assert!(after_restart.len() > 5_000, "most records went to the new broker");

    let deadline = Instant::now() + Duration::from_secs(10);
    let missing = loop {
        let seen = seen.lock().unwrap();
        let missing: Vec<_> = after_restart.iter().filter(|v| !seen.contains_key(*v)).collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing.len();
        }
        drop(seen);
        thread::sleep(Duration::from_millis(20));
    };
    stop.store(true, Ordering::Relaxed);
    let consumer_stats = reader.join().unwrap();
    assert_eq!(missing, 0, "records acknowledged by the new broker were all consumed");
    assert!(consumer_stats.reconnects >= 1, "the consumer subscribed again");
    let seen = seen.lock().unwrap();
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    let distinct: HashSet<_> = seen.keys().collect();
    println!(
        "producer {:?}; consumer {consumer_stats:?}; {} distinct records consumed, {duplicates} duplicates",
        producer.stats(),
        distinct.len()
    );
}

/// Goal: a broker gone for good ends in `GaveUp` within the backoff bounds, and every
/// record in flight gets that error as its outcome. Method: stop the broker under a
/// producer and a consumer whose policy allows 4 attempts 10 to 40 ms apart.
#[test]
fn a_broker_gone_for_good_is_a_clear_error_within_the_backoff_bounds() {
    let broker = start_broker(|_| {});
    let mut config = client_config(Duration::from_secs(10));
    config.backoff = BackoffConfig {
        base: Duration::from_millis(10),
        cap: Duration::from_millis(40),
        attempts_max: Some(4),
        elapsed_max: None,
    };
    let mut producer =
        Producer::connect(&[broker.addr], config.clone(), ProducerConfig::default()).unwrap();
    let subscription = ConsumerConfig::default();
    let mut consumer =
        Consumer::subscribe(&[broker.addr], "gone", "g", config, subscription).unwrap();
    producer.send("gone", None, b"stored").unwrap();
    assert!(producer.flush().unwrap()[0].result.is_ok());
    broker.stop().unwrap();

    let started = Instant::now();
    let seqs: Vec<u64> = (0..3).map(|_| producer.send("gone", None, b"lost").unwrap()).collect();
    let e = producer.flush().unwrap_err();
    assert!(matches!(e, ClientError::GaveUp { attempts: 4, .. }), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2), "3 delays of at most 40 ms each");
    let outcomes = producer.poll().unwrap();
    let failed: Vec<u64> = outcomes.iter().filter(|o| o.result.is_err()).map(|o| o.seq).collect();
    assert_eq!(failed, seqs, "each record in flight got the error");
    assert!(e
        .to_string()
        .starts_with("gave up reconnecting after 4 attempts: cannot reach broker"));

    // The record stored before the stop may still be buffered; then the loss shows.
    let e = loop {
        match consumer.poll(Duration::from_secs(1)) {
            Ok(messages) => assert!(messages.iter().all(|m| m.value == "stored")),
            Err(e) => break e,
        }
    };
    assert!(matches!(e, ClientError::GaveUp { .. }), "{e}");
}

/// Goal: an ephemeral consumer that reconnects subscribes again at its own start position:
/// its group went with the lost connection, so there are no committed offsets to resume
/// from, and a `latest` tail must not replay what the broker holds. Method: the broker is
/// restarted on the same port, a record is published to the new one before the consumer
/// notices, then the consumer polls (reconnecting) and only a record published after that
/// reaches it.
#[test]
fn an_ephemeral_consumer_rejoins_at_its_start_position() {
    let broker = start_broker(|_| {});
    let addr = broker.addr;
    let config = client_config(Duration::from_secs(10));
    let subscription =
        ConsumerConfig { start: StartPosition::Latest, credit: 16, ack_batch: 0, ephemeral: true };
    let mut consumer =
        Consumer::subscribe(&[addr], "look", "glance", config.clone(), subscription).unwrap();
    broker.stop().unwrap();
    let _broker = start_broker_at(addr, |_| {});
    let mut producer = Producer::connect(&[addr], config, ProducerConfig::default()).unwrap();
    producer.send("look", None, b"before").unwrap();
    producer.flush().unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    while consumer.stats().reconnects == 0 && Instant::now() < deadline {
        let early = consumer.poll(Duration::from_millis(50)).unwrap();
        assert!(early.is_empty(), "a latest tail replayed {early:?}");
    }
    assert_eq!(consumer.stats().reconnects, 1);
    producer.send("look", None, b"after").unwrap();
    producer.flush().unwrap();
    let mut got = Vec::new();
    while got.is_empty() && Instant::now() < deadline {
        got = consumer.poll(Duration::from_millis(100)).unwrap();
    }
    let values: Vec<&[u8]> = got.iter().map(|m| &m.value[..]).collect();
    assert_eq!(values, vec![&b"after"[..]]);
}
