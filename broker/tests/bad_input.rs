//! Hostile and broken input against a real `mqd` process: each case gets a named error and
//! closes at most its own connection; the broker keeps serving a bystander connection and
//! its resident memory stays bounded.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use mq_protocol::{ErrorCode, Request, Response};

/// Sends raw bytes, then reads what the broker answers until it closes (or 3 s pass).
fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let _ = s.write_all(bytes);
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut chunk = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), false)
}

/// A binary frame error: decode the ERROR frame the broker sent.
fn binary_error(addr: std::net::SocketAddr, bytes: &[u8]) -> (ErrorCode, bool) {
    let mut c = Bin::connect(addr);
    c.stream.write_all(bytes).unwrap();
    let (_, reply) = c.recv_within(Duration::from_secs(3)).expect("an error frame");
    let Response::Error { code, .. } = reply else { panic!("expected ERROR, got {reply:?}") };
    (code, c.closed_within(Duration::from_secs(3)))
}

#[test]
fn bad_input_gets_named_errors_and_closes_only_its_own_connection() {
    let mqd = Mqd::spawn(&["--storage", "memory"]);
    let mut bystander = Bin::connect(mqd.addr);
    assert_eq!(bystander.call(&subscribe("t", "g", 100)), Response::Subscribed { partitions: 16 });
    let rss_before = mqd.rss_kib();

    let (reply, closed) = exchange(mqd.addr, &[0x00, 0xff, 0x13, 0x37, 0xde, 0xad]);
    assert!(reply.starts_with("-ERR BAD_START"), "{reply}");
    assert!(closed, "garbage closes the connection");

    let client_hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
    let (reply, closed) = exchange(mqd.addr, &client_hello);
    assert!(reply.starts_with("-ERR BAD_START"), "{reply}");
    assert!(closed);

    let mut http = Text::connect(mqd.addr);
    http.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let mq_protocol::text::TextReply::Err { code, .. } = http.reply() else { panic!() };
    assert_eq!(code, ErrorCode::UNKNOWN_VERB);

    let (code, closed) =
        binary_error(mqd.addr, &[0xa7, 0x01, 0x10, 0x00, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1]);
    assert_eq!(code, ErrorCode::FRAME_TOO_LARGE);
    assert!(closed, "an impossible length breaks framing");

    let mut unknown = Bin::connect(mqd.addr);
    unknown.stream.write_all(&[0xa7, 0x01, 0x55, 0x00, 0, 0, 0, 0, 0, 0, 0, 9]).unwrap();
    let (id, reply) = unknown.recv_within(Duration::from_secs(3)).unwrap();
    assert_eq!(id, 9);
    assert!(matches!(reply, Response::Error { code: ErrorCode::UNKNOWN_OPCODE, .. }), "{reply:?}");
    assert_eq!(
        unknown.call(&Request::Ping),
        Response::Pong,
        "an unknown opcode leaves the connection open"
    );

    let mut truncated = TcpStream::connect(mqd.addr).unwrap();
    truncated
        .write_all(&[0xa7, 0x01, 0x10, 0x00, 0x00, 0x00, 0x03, 0xe8, 0, 0, 0, 1, 1, 2, 3])
        .unwrap();
    drop(truncated);

    let mut long = TcpStream::connect(mqd.addr).unwrap();
    long.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let line = vec![b'X'; 10 * 1024 * 1024];
    let writer = {
        let mut w = long.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = w.write_all(&line);
        })
    };
    let mut reply = vec![0u8; 256];
    let n = long.read(&mut reply).unwrap_or(0);
    let reply = String::from_utf8_lossy(&reply[..n]).into_owned();
    assert!(reply.starts_with("-ERR LINE_TOO_LONG"), "{reply}");
    writer.join().unwrap();

    assert_eq!(bystander.call(&Request::Ping), Response::Pong, "the bystander is unaffected");
    bystander.call(&publish("t", ["still here".to_string()]));
    assert_eq!(&bystander.collect(1, Duration::from_secs(5))[0].value[..], b"still here");
    let rss_after = mqd.rss_kib();
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

#[test]
fn a_thousand_connections_opened_and_dropped_leave_the_broker_serving_and_bounded() {
    let mqd = Mqd::spawn(&["--storage", "memory", "--max-connections", "1100"]);
    let mut probe = Bin::connect(mqd.addr);
    assert_eq!(probe.call(&Request::Ping), Response::Pong);
    let rss_before = mqd.rss_kib();
    for round in 0..2 {
        let conns: Vec<TcpStream> =
            (0..1000).map(|_| TcpStream::connect(mqd.addr).unwrap()).collect();
        for (i, mut c) in conns.into_iter().enumerate() {
            if i % 3 == round {
                let _ = c.write_all(b"PING\r\n");
            }
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let Response::Stats(json) = probe.call(&Request::Stats) else { panic!() };
        let stats: mq_protocol::admin::StatsReply = serde_json::from_slice(&json).unwrap();
        if stats.connections == 1 && stats.connections_total >= 2001 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "connections never drained: {} open, {} accepted",
            stats.connections,
            stats.connections_total
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let rss_after = mqd.rss_kib();
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
}

#[test]
fn connections_past_the_limit_are_refused_with_a_named_error() {
    let mqd = Mqd::spawn(&["--storage", "memory", "--max-connections", "3"]);
    let mut keep: Vec<Bin> = (0..3).map(|_| Bin::connect(mqd.addr)).collect();
    for c in &mut keep {
        assert_eq!(c.call(&Request::Ping), Response::Pong);
    }
    let (reply, closed) = exchange(mqd.addr, b"PING\r\n");
    assert!(reply.starts_with("-ERR TOO_MANY_CONNECTIONS"), "{reply}");
    assert!(closed);
    assert_eq!(keep[0].call(&Request::Ping), Response::Pong);
}

#[test]
fn auth_token_is_required_within_the_deadline() {
    let mqd =
        Mqd::spawn(&["--storage", "memory", "--auth-token", "s3cret", "--auth-timeout-ms", "300"]);
    let (reply, closed) = exchange(mqd.addr, b"PING\r\n");
    assert!(reply.starts_with("-ERR AUTH_REQUIRED"), "{reply}");
    assert!(closed);
    let (reply, closed) = exchange(mqd.addr, b"AUTH nope\r\n");
    assert!(reply.starts_with("-ERR AUTH_FAILED"), "{reply}");
    assert!(!reply.contains("s3cret"), "the token is never echoed");
    assert!(closed);
    let (reply, closed) = exchange(mqd.addr, b"");
    assert!(reply.starts_with("-ERR AUTH_TIMEOUT"), "{reply}");
    assert!(closed);
    let mut ok = Text::connect(mqd.addr);
    ok.send(b"AUTH s3cret\r\nPING\r\n");
    assert_eq!(ok.reply(), mq_protocol::text::TextReply::Ok(String::new()));
    assert_eq!(ok.reply(), mq_protocol::text::TextReply::Pong);
}
