//! Replies no correct broker sends: the client reports typed errors and never panics.
//!
//! A fake broker (a plain `TcpListener` thread) decodes each request with the protocol
//! crate and answers with whatever bytes the test scripts.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::Duration;

use bytes::BytesMut;
use common::client_config;
use mq_client::protocol::{Limits, Placement, Request, Response};
use mq_client::{BackoffConfig, Client, ClientError, Producer, ProducerConfig};

/// Serves connections one after another; `answer` gets each request and returns the bytes
/// to send back.
fn fake_broker(answer: fn(u32, &Request) -> Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = BytesMut::new();
            let mut chunk = [0u8; 4096];
            loop {
                match mq_client::protocol::decode_request(&mut buf, &Limits::default()) {
                    Ok(Some(d)) => {
                        let reply = answer(d.request_id, &d.result.unwrap());
                        if stream.write_all(&reply).is_err() {
                            break;
                        }
                        continue;
                    }
                    Ok(None) => {}
                    Err(_) => break,
                }
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        }
    });
    addr
}

fn frame(id: u32, response: &Response) -> Vec<u8> {
    let mut out = BytesMut::new();
    response.encode(id, u32::MAX, &mut out).unwrap();
    out.to_vec()
}

fn info(id: u32) -> Vec<u8> {
    frame(id, &Response::Info(r#"{"server":"mqd","frame_body_bytes_max":1048576}"#.into()))
}

fn no_retry() -> mq_client::ClientConfig {
    let mut config = client_config(Duration::from_secs(1));
    config.backoff = BackoffConfig::never();
    config.request_timeout = Duration::from_secs(2);
    config
}

/// Goal: a server that is not a broker (it answers in HTTP) is a protocol error at connect.
#[test]
fn a_server_that_speaks_http_is_a_protocol_error() {
    let addr = fake_broker(|_, _| b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec());
    let e = Client::connect(&[addr], no_retry()).unwrap_err();
    assert!(matches!(e, ClientError::Protocol(_)), "{e}");
}

/// Goal: frames with opcodes this client does not know are skipped (a newer broker may send
/// some), and a body that does not match its layout is a protocol error.
#[test]
fn unknown_opcodes_are_skipped_and_malformed_bodies_are_errors() {
    let addr = fake_broker(|id, request| match request {
        Request::Info => {
            let mut unknown = vec![0xa7, 1, 0x55, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0xde, 0xad];
            unknown.extend(info(id));
            unknown
        }
        // A PONG is empty; this one has a body: trailing bytes, MALFORMED.
        Request::Ping => vec![0xa7, 1, 0x02, 0, 0, 0, 0, 1, 0, 0, 0, id as u8, 0],
        _ => Vec::new(),
    });
    let mut client = Client::connect(&[addr], no_retry()).unwrap();
    let e = client.ping().unwrap_err();
    assert!(matches!(e, ClientError::Protocol(_)), "{e}");
}

/// Goal: a `PUBLISHED` whose count does not match the batch gives those records an error
/// outcome instead of wrong placements.
#[test]
fn a_published_reply_with_the_wrong_count_fails_its_records() {
    let addr = fake_broker(|id, request| match request {
        Request::Info => info(id),
        Request::Publish { .. } => {
            frame(id, &Response::Published(vec![Placement { partition: 0, offset: 0 }]))
        }
        _ => Vec::new(),
    });
    let mut producer = Producer::connect(&[addr], no_retry(), ProducerConfig::default()).unwrap();
    producer.send("t", None, b"a").unwrap();
    producer.send("t", None, b"b").unwrap();
    let outcomes = producer.flush().unwrap();
    assert_eq!(outcomes.len(), 2);
    for o in outcomes {
        let e = o.result.unwrap_err();
        assert!(matches!(e, ClientError::UnexpectedReply(_)), "{e}");
    }
}

/// Goal: a broker that never answers is a timeout, not a hang.
#[test]
fn a_silent_broker_is_a_timeout() {
    let addr = fake_broker(|id, request| match request {
        Request::Info => info(id),
        _ => Vec::new(),
    });
    let mut config = no_retry();
    config.request_timeout = Duration::from_millis(200);
    let mut client = Client::connect(&[addr], config).unwrap();
    let e = client.ping().unwrap_err();
    assert!(
        matches!(e, ClientError::Timeout { timeout_ms: 200 } | ClientError::GaveUp { .. }),
        "{e}"
    );
}
