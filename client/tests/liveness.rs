//! Signs of life against a real broker (in-process, 127.0.0.1): a consumer waiting in
//! `poll` sends a `PING` every second, so neither the broker's idle timeout nor its
//! silent-member rule takes it for gone; one that stops calling `poll` while holding records
//! past the ack timeout is closed (`IDLE_TIMEOUT`) and comes back by itself.

mod common;

use std::time::Duration;

use common::{client_config, start_broker};
use mq_client::{Client, ConsumerConfig, ProducerConfig, StartPosition};

const WAIT: Duration = Duration::from_secs(10);

fn earliest() -> ConsumerConfig {
    ConsumerConfig { start: StartPosition::Earliest, credit: 100, ack_batch: 0, ephemeral: false }
}

#[test]
fn a_consumer_waiting_in_poll_outlives_the_idle_timeout() {
    let broker = start_broker(|c| c.core.idle_timeout = Duration::from_millis(1500));
    let client = Client::connect(&[broker.addr], client_config(WAIT)).unwrap();
    let mut consumer = client.subscribe("t", "g", earliest()).unwrap();
    // Twice the idle timeout with nothing to receive.
    assert!(consumer.poll(Duration::from_millis(3500)).unwrap().is_empty());
    let mut producer = client.producer(ProducerConfig::default()).unwrap();
    producer.send("t", None, b"hello").unwrap();
    producer.flush().unwrap();
    let got = consumer.poll(WAIT).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(consumer.stats().reconnects, 0, "never taken for idle");
}

#[test]
fn a_consumer_that_holds_records_without_polling_is_taken_for_gone_and_comes_back() {
    let broker = start_broker(|c| c.core.ack_timeout = Duration::from_millis(300));
    let client = Client::connect(&[broker.addr], client_config(WAIT)).unwrap();
    let mut producer = client.producer(ProducerConfig::default()).unwrap();
    producer.send("t", None, b"held").unwrap();
    producer.flush().unwrap();
    let mut consumer = client.subscribe("t", "g", earliest()).unwrap();
    let first = consumer.poll(WAIT).unwrap();
    assert_eq!(first.len(), 1);
    // The application holds the record past the ack timeout without calling the consumer.
    std::thread::sleep(Duration::from_millis(1000));
    // Its next poll finds the connection closed (IDLE_TIMEOUT), reconnects, resubscribes and
    // gets the record again.
    let deadline = std::time::Instant::now() + WAIT;
    let mut again = Vec::new();
    while again.is_empty() && std::time::Instant::now() < deadline {
        again = consumer.poll(Duration::from_millis(200)).unwrap();
    }
    assert_eq!(again.len(), 1);
    assert_eq!(&again[0].value[..], b"held");
    assert!(again[0].attempt >= 2, "redelivered: {}", again[0].attempt);
    assert_eq!(consumer.stats().reconnects, 1);
    consumer.ack(&again[0]).unwrap();
    consumer.commit().unwrap();
}
