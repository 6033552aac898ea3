//! A broker that refuses the client's token: the refusal is reported at once, as a typed
//! error ([`ClientError::is_auth_refused`]), on the first connect and on a reconnect alike,
//! and never retried (every connection would be refused the same way).

mod common;

use std::time::{Duration, Instant};

use common::{client_config, start_broker, start_broker_at};
use mq_client::{
    Client, ClientConfig, ClientError, Consumer, ConsumerConfig, ErrorCode, Producer,
    ProducerConfig,
};

const TOKEN: &str = "s3cret-token";

/// Settings with `token` that would keep reconnecting for a whole minute if they retried.
fn patient(token: Option<&str>) -> ClientConfig {
    ClientConfig { auth_token: token.map(str::to_string), ..client_config(Duration::from_secs(60)) }
}

#[track_caller]
fn assert_refused(error: &ClientError, code: ErrorCode) {
    assert!(error.is_auth_refused(), "{error:?} is an auth refusal");
    assert_eq!(error.code(), Some(code), "{error}");
    assert!(!error.is_connection_lost(), "{error}: not worth a reconnect");
}

/// Goal: a wrong or missing token fails the first connect at once with the broker's code,
/// for admin clients, producers and consumers; the right token connects. Method: a broker
/// with `--auth-token`; connect with each.
#[test]
fn a_refused_token_fails_the_first_connect_at_once() {
    let broker = start_broker(|c| c.core.auth_token = Some(TOKEN.into()));
    let addr = [broker.addr];
    let started = Instant::now();

    let e = Client::connect(&addr, patient(Some("wrong"))).unwrap_err();
    assert_refused(&e, ErrorCode::AUTH_FAILED);
    assert!(e.to_string().contains("AUTH_FAILED"), "{e}");
    let e = Client::connect(&addr, patient(None)).unwrap_err();
    assert_refused(&e, ErrorCode::AUTH_REQUIRED);
    let e =
        Producer::connect(&addr, patient(Some("wrong")), ProducerConfig::default()).unwrap_err();
    assert_refused(&e, ErrorCode::AUTH_FAILED);
    let e = Consumer::subscribe(&addr, "t", "g", patient(Some("wrong")), ConsumerConfig::default())
        .unwrap_err();
    assert_refused(&e, ErrorCode::AUTH_FAILED);
    assert!(started.elapsed() < Duration::from_secs(5), "no retry: {:?}", started.elapsed());

    let mut client = Client::connect(&addr, patient(Some(TOKEN))).expect("the right token");
    assert!(client.info().unwrap().auth_required);
}

/// Goal: a refusal met while reconnecting ends the reconnect at once with the refusal
/// (not `GaveUp` after the whole backoff, nor a retry for ever). Method: a producer and a
/// consumer connect to a broker without a token; the broker is stopped and started again on
/// the same port requiring a token the clients do not have; their next calls must fail
/// within a few seconds (the backoff allows a minute) with `AUTH_REQUIRED`; a client given
/// the wrong token gets `AUTH_FAILED` the same way.
#[test]
fn a_refused_token_ends_a_reconnect_at_once() {
    let broker = start_broker(|_| {});
    let addr = broker.addr;
    let mut producer =
        Producer::connect(&[addr], patient(None), ProducerConfig::default()).unwrap();
    producer.send("t", None, b"before").unwrap();
    for outcome in producer.flush().unwrap() {
        outcome.result.unwrap();
    }
    let mut consumer =
        Consumer::subscribe(&[addr], "t", "g", patient(None), ConsumerConfig::default()).unwrap();
    let mut wrong_token = Client::connect(&[addr], patient(Some("wrong"))).unwrap();
    let mut wrong_producer = wrong_token.producer(ProducerConfig::default()).unwrap();
    wrong_token.stats().unwrap();

    broker.stop().unwrap();
    let broker = start_broker_at(addr, |c| c.core.auth_token = Some(TOKEN.into()));
    let started = Instant::now();

    producer.send("t", None, b"after").unwrap();
    let e = producer.flush().unwrap_err();
    assert_refused(&e, ErrorCode::AUTH_REQUIRED);
    let outcomes = producer.flush().unwrap();
    assert!(
        outcomes.iter().all(|o| o.result.as_ref().is_err_and(ClientError::is_auth_refused)),
        "the record in flight failed with the refusal: {outcomes:?}"
    );

    let e = loop {
        // The consumer notices the lost connection on its next read.
        match consumer.poll(Duration::from_millis(100)) {
            Ok(_) => assert!(started.elapsed() < Duration::from_secs(10), "no failure"),
            Err(e) => break e,
        }
    };
    assert_refused(&e, ErrorCode::AUTH_REQUIRED);

    wrong_producer.send("t", None, b"x").unwrap();
    assert_refused(&wrong_producer.flush().unwrap_err(), ErrorCode::AUTH_FAILED);

    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refusals reported at once, not after the minute of backoff: {:?}",
        started.elapsed()
    );
    assert_eq!(producer.stats().reconnects, 0, "no connection was made");
    drop(broker);
}
