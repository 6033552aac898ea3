//! Fault and bad-input cases of `docs/fault-cases.md` that no other test covered, against a
//! real `mqd` process or an in-process broker on 127.0.0.1:0. Each test names its case ID
//! (W1, D4, P7, ...) from that table.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use mq_protocol::admin::{StatsReply, TopicsReply};
use mq_protocol::{ErrorCode, Record, Request, Response};

const WAIT: Duration = Duration::from_secs(5);

/// What each group received: (partition, offset) pairs.
type SeenByGroup = Arc<Mutex<BTreeMap<&'static str, BTreeSet<(u32, u64)>>>>;

fn stats(c: &mut Bin) -> StatsReply {
    let Response::Stats(json) = c.call(&Request::Stats) else { panic!("no stats") };
    serde_json::from_slice(&json).unwrap()
}

fn topics(c: &mut Bin) -> TopicsReply {
    let Response::Topics(json) = c.call(&Request::Topics) else { panic!("no topics") };
    serde_json::from_slice(&json).unwrap()
}

fn records_of(c: &mut Bin, topic: &str) -> Option<u64> {
    topics(c).topics.iter().find(|t| t.name == topic).map(|t| t.records)
}

/// Waits until the broker counts `n` open connections.
fn wait_connections(probe: &mut Bin, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = stats(probe);
        if s.connections == n {
            return;
        }
        assert!(Instant::now() < deadline, "{} connections open, expected {n}", s.connections);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Open file descriptors of a process.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// A PUBLISH frame of two records whose body is exactly `body_len` bytes (topic `t`).
fn publish_frame_of_body(body_len: usize) -> Vec<u8> {
    // topic length (2) + `t` (1) + count (4) + 2 × (key length (2) + value length (4))
    let values = body_len - 19;
    let record = |n: usize| Record { key: None, value: Bytes::from(vec![b'v'; n]) };
    let request = Request::Publish {
        topic: "t".into(),
        records: vec![record(values / 2), record(values - values / 2)],
    };
    let mut out = BytesMut::new();
    request.encode(7, u32::MAX, &mut out).unwrap();
    assert_eq!(out.len(), 12 + body_len);
    out.to_vec()
}

/// W1: with `--max-frame-bytes 4096`, a frame of exactly 4096 body bytes is stored, 4097 is
/// `FRAME_TOO_LARGE` and closes, and so do declared lengths of 0x7FFFFFFF and 0xFFFFFFFF,
/// none of which makes the broker allocate the declared size.
#[test]
fn w1_a_frame_of_exactly_max_is_accepted_and_larger_declared_lengths_are_refused() {
    let mqd = Mqd::spawn(&["--storage", "memory", "--max-frame-bytes", "4096"]);
    let mut probe = Bin::connect(mqd.addr);
    assert_eq!(probe.call(&Request::Ping), Response::Pong);

    let mut exact = Bin::connect(mqd.addr);
    exact.stream.write_all(&publish_frame_of_body(4096)).unwrap();
    let (id, reply) = exact.recv_within(WAIT).expect("a reply to the max-size frame");
    assert_eq!(id, 7);
    assert!(matches!(&reply, Response::Published(p) if p.len() == 2), "{reply:?}");
    assert_eq!(exact.call(&Request::Ping), Response::Pong, "the connection stays open");

    let mut over = Bin::connect(mqd.addr);
    over.stream.write_all(&publish_frame_of_body(4097)).unwrap();
    let (_, reply) = over.recv_within(WAIT).expect("an error frame");
    let Response::Error { code, message } = reply else { panic!("{reply:?}") };
    assert_eq!(code, ErrorCode::FRAME_TOO_LARGE);
    assert!(message.contains("4097") && message.contains("4096"), "limit and value: {message}");
    assert!(over.closed_within(WAIT), "one byte over the limit closes the connection");

    let rss_before = mqd.rss_kib();
    for declared in [0x7fff_ffffu32, 0xffff_ffff] {
        for _ in 0..20 {
            let mut c = Bin::connect(mqd.addr);
            let mut header = vec![0xa7, 0x01, 0x10, 0x00];
            header.extend_from_slice(&declared.to_be_bytes());
            header.extend_from_slice(&[0, 0, 0, 1]);
            c.stream.write_all(&header).unwrap();
            let (_, reply) = c.recv_within(WAIT).expect("an error frame");
            assert!(
                matches!(reply, Response::Error { code: ErrorCode::FRAME_TOO_LARGE, .. }),
                "{declared:#x}: {reply:?}"
            );
            assert!(c.closed_within(WAIT));
        }
    }
    let rss_after = mqd.rss_kib();
    assert!(
        rss_after < rss_before + 1024,
        "RSS grew by {} KiB for refused huge lengths",
        rss_after.saturating_sub(rss_before)
    );
    assert_eq!(records_of(&mut probe, "t"), Some(2), "only the exact-size frame was stored");
}

/// W2: a frame cut short (a 1000-byte body of which 10 bytes arrive, then close), a header
/// cut in the middle and half-closed, and a text PUB whose payload never completes publish
/// nothing and leave no connection behind.
#[test]
fn w2_frames_cut_short_publish_nothing_and_leave_no_connection() {
    let mqd = Mqd::spawn(&["--storage", "memory"]);
    let mut probe = Bin::connect(mqd.addr);
    assert_eq!(probe.call(&Request::Ping), Response::Pong);
    let fds_before = fd_count(mqd.child.id());

    for round in 0..20 {
        // A PUBLISH to topic `w2` whose header announces 1000 body bytes; 10 arrive.
        let mut cut = TcpStream::connect(mqd.addr).unwrap();
        let mut bytes = vec![0xa7, 0x01, 0x10, 0x00, 0x00, 0x00, 0x03, 0xe8, 0, 0, 0, 1];
        bytes.extend_from_slice(&[0x00, 0x02, b'w', b'2', 0, 0, 0, 1, 0, 0]);
        cut.write_all(&bytes).unwrap();
        if round % 2 == 0 {
            drop(cut);
        } else {
            cut.shutdown(Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            cut.set_read_timeout(Some(WAIT)).unwrap();
            let _ = cut.read_to_end(&mut rest);
        }

        // Half a header, then half-close: the broker must close its side.
        let mut half = TcpStream::connect(mqd.addr).unwrap();
        half.write_all(&[0xa7, 0x01, 0x10, 0x00, 0x00, 0x00]).unwrap();
        half.shutdown(Shutdown::Write).unwrap();
        half.set_read_timeout(Some(WAIT)).unwrap();
        let mut rest = Vec::new();
        let start = Instant::now();
        let _ = half.read_to_end(&mut rest);
        assert!(start.elapsed() < WAIT, "a half-closed connection with half a header is closed");

        // A text PUB announcing 100 payload bytes, of which 5 arrive.
        let mut text = TcpStream::connect(mqd.addr).unwrap();
        text.write_all(b"PUB w2 100\r\nhello").unwrap();
        drop(text);
    }
    wait_connections(&mut probe, 1);
    assert_eq!(records_of(&mut probe, "w2"), None, "no partial record is visible");
    let deadline = Instant::now() + WAIT;
    while fd_count(mqd.child.id()) > fds_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(fd_count(mqd.child.id()), fds_before, "file descriptors back to baseline");
}

/// W3 (with a token): a slowloris that sends one byte of `AUTH` every 100 ms never
/// authenticates and is cut at the auth deadline; dribbling bytes does not extend it.
#[test]
fn w3_a_dribbling_client_is_cut_at_the_auth_deadline() {
    let mqd =
        Mqd::spawn(&["--storage", "memory", "--auth-token", "s3cret", "--auth-timeout-ms", "500"]);
    let mut s = TcpStream::connect(mqd.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut closed = false;
    for byte in b"AUTH s3cre".iter().cycle().take(100) {
        if s.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        let mut chunk = [0u8; 256];
        match s.read(&mut chunk) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    assert!(closed, "the dribbling connection was never closed");
    assert!(String::from_utf8_lossy(&got).starts_with("-ERR AUTH_TIMEOUT"), "{got:?}");
    assert!(elapsed < Duration::from_millis(2500), "closed after {elapsed:?}, deadline 500 ms");
}

/// W4 over a real socket: malformed fields (a topic that is not UTF-8, an empty topic, a
/// 201-byte topic, a topic with `*`, a credit above u32 in text) get their typed error and
/// leave the connection open.
#[test]
fn w4_malformed_fields_get_typed_errors_and_the_connection_stays_open() {
    let mqd = Mqd::spawn(&["--storage", "memory"]);
    let mut c = Bin::connect(mqd.addr);
    let not_utf8 = [
        0xa7, 0x01, 0x10, 0x00, 0, 0, 0, 0x11, 0, 0, 0, 1, 0, 4, b't', b'e', b'l', 0xff, 0, 0, 0,
        1, 0, 0, 0, 0, 0, 1, b'x',
    ];
    let mut empty_topic = vec![0xa7, 0x01, 0x20, 0x00, 0, 0, 0, 0x13, 0, 0, 0, 2, 0, 0, 0, 0x0a];
    empty_topic.extend_from_slice(b"collectors");
    empty_topic.extend_from_slice(&[1, 0, 0, 1, 0]);
    let mut long_topic = vec![0xa7, 0x01, 0x12, 0x00, 0, 0, 0, 0xdf, 0, 0, 0, 3, 0, 0xc9];
    long_topic.extend_from_slice(&[b't'; 201]);
    long_topic.extend_from_slice(&[0; 20]);
    let mut wildcard = vec![0xa7, 0x01, 0x10, 0x00, 0, 0, 0, 0x0e, 0, 0, 0, 4, 0, 1, b'*'];
    wildcard.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 1, b'x']);
    for (frame, id, expected) in [
        (&not_utf8[..], 1, ErrorCode::MALFORMED),
        (&empty_topic[..], 2, ErrorCode::BAD_ARG),
        (&long_topic[..], 3, ErrorCode::BAD_ARG),
        (&wildcard[..], 4, ErrorCode::BAD_ARG),
    ] {
        c.stream.write_all(frame).unwrap();
        let (rid, reply) = c.recv_within(WAIT).expect("a reply");
        assert_eq!(rid, id);
        let Response::Error { code, .. } = reply else { panic!("frame {id}: {reply:?}") };
        assert_eq!(code, expected, "frame {id}");
        assert_eq!(c.call(&Request::Ping), Response::Pong, "frame {id} left the connection open");
    }
    let mut t = Text::connect(mqd.addr);
    t.send(b"SUB t g earliest 4294967296\r\nPUB a*b 1\r\nx\r\nPING\r\n");
    for expected in [ErrorCode::BAD_ARG, ErrorCode::BAD_ARG] {
        let mq_protocol::text::TextReply::Err { code, .. } = t.reply() else { panic!() };
        assert_eq!(code, expected);
    }
    assert_eq!(t.reply(), mq_protocol::text::TextReply::Pong);
    assert_eq!(topics(&mut c).topics.len(), 0, "nothing was created");
}

/// D2: the same record acknowledged twice, and by a member it was not delivered to, is
/// settled once: it is never redelivered, the second ACK is ignored or `NOT_IN_FLIGHT`, and
/// both connections stay open.
#[test]
fn d2_double_and_foreign_acks_settle_a_record_once() {
    let broker = start_broker(|c| c.core.ack_timeout = Duration::from_millis(300));
    let mut a = Bin::connect(broker.addr);
    let mut b = Bin::connect(broker.addr);
    a.call(&create("t", 1));
    assert_eq!(a.call(&subscribe("t", "g", 10)), Response::Subscribed { partitions: 1 });
    b.call(&subscribe("t", "g", 10));
    a.call(&publish("t", ["one".to_string(), "two".to_string()]));
    let got = a.collect(2, WAIT);
    assert_eq!(got.len(), 2);
    // `b` owns no partition but acknowledges `a`'s record 0.
    let reply = b.call(&ack_all("t", "g", &got[..1]));
    assert!(
        matches!(reply, Response::Ok | Response::Error { code: ErrorCode::NOT_IN_FLIGHT, .. }),
        "{reply:?}"
    );
    let foreign_settled = reply == Response::Ok;
    for _ in 0..2 {
        let reply = a.call(&ack_all("t", "g", &got));
        assert!(
            matches!(reply, Response::Ok | Response::Error { code: ErrorCode::NOT_IN_FLIGHT, .. }),
            "{reply:?}"
        );
    }
    let reply = a.call(&ack_all("t", "g", &got));
    assert!(
        matches!(reply, Response::Error { code: ErrorCode::NOT_IN_FLIGHT, .. }),
        "a third ACK of settled records acts on nothing: {reply:?}"
    );
    assert!(a.collect(1, Duration::from_millis(900)).is_empty(), "nothing comes back");
    assert!(b.collect(1, Duration::from_millis(100)).is_empty());
    let s = stats(&mut a);
    let g = s.groups.iter().find(|g| g.group == "g").unwrap();
    assert_eq!(g.partitions.iter().map(|p| p.lag).sum::<u64>(), 0, "both settled once");
    assert_eq!(s.topics[0].records_out, 2, "no redelivery (foreign ack ok: {foreign_settled})");
    assert_eq!(a.call(&Request::Ping), Response::Pong);
    assert_eq!(b.call(&Request::Ping), Response::Pong);
}

/// D3: a poison record (never acknowledged) is dead-lettered after `max_deliveries` while the
/// records behind it keep flowing, and is delivered exactly that many times (no hot loop).
#[test]
fn d3_a_poison_record_does_not_hold_up_the_others() {
    let broker = start_broker(|c| {
        c.core.ack_timeout = Duration::from_millis(150);
        c.core.max_deliveries = 3;
    });
    let mut c = Bin::connect(broker.addr);
    let mut dlq = Bin::connect(broker.addr);
    c.call(&create("t", 1));
    c.call(&subscribe("t", "g", 100));
    dlq.call(&subscribe("t.dlq", "ops", 10));
    let mut publisher = Bin::connect(broker.addr);
    publisher.call(&publish("t", std::iter::once("poison".to_string())));
    let mut poison_deliveries = 0;
    let mut good = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut published = 0;
    while Instant::now() < deadline && (good.len() < 50 || poison_deliveries < 3) {
        if published < 50 {
            publisher.call(&publish("t", (published..published + 5).map(|i| format!("good {i}"))));
            published += 5;
        }
        if let Some(d) = c.deliver_within(Duration::from_millis(50)) {
            let settle: Vec<_> =
                d.records.iter().filter(|r| &r.value[..] != b"poison").cloned().collect();
            poison_deliveries += d.records.len() - settle.len();
            good.extend(settle.iter().map(|r| r.value.clone()));
            if !settle.is_empty() {
                c.send(&ack_all("t", "g", &settle));
            } else {
                // Alive, though not acking: a member that sends nothing at all while its
                // records time out is taken out of the group (IDLE_TIMEOUT).
                c.send(&Request::Ping);
            }
        }
    }
    assert_eq!(good.len(), 50, "every good record arrived while the poison one was retried");
    assert_eq!(poison_deliveries, 3);
    let dead = dlq.collect(1, WAIT);
    assert_eq!(&dead[0].value[..], b"DLQ t 0 0 3 ack_timeout\npoison");
    assert!(c.collect(1, Duration::from_millis(500)).is_empty(), "no fourth delivery");
}

/// D4: 10,000 records in flight to a consumer that dies come back to the surviving member
/// paced by `--max-inflight` (1,000): never more than that outstanding, all eventually
/// acknowledged.
#[test]
fn d4_a_redelivery_storm_is_paced_by_max_inflight() {
    let broker = start_broker(|c| {
        c.core.credit_max = 1000;
        c.core.ack_timeout = Duration::from_secs(3);
    });
    let mut dying = Bin::connect(broker.addr);
    dying.call(&create("t", 4));
    dying.call(&subscribe("t", "g", 65_536));
    let mut p = Bin::connect(broker.addr);
    for chunk in 0..20 {
        let reply = p.call(&publish("t", (0..500).map(|i| format!("{chunk}-{i}"))));
        assert!(matches!(reply, Response::Published(_)), "{reply:?}");
    }
    let first = dying.collect(10_000, Duration::from_millis(500));
    assert_eq!(first.len(), 1000, "credit 65,536 is lowered to max-inflight 1,000");
    let distinct: BTreeSet<_> = first.iter().map(|d| (d.partition, d.offset)).collect();
    assert_eq!(distinct.len(), 1000);
    let mut survivor = Bin::connect(broker.addr);
    survivor.call(&subscribe("t", "g", 65_536));
    drop(dying);

    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 10_000 {
        assert!(Instant::now() < deadline, "only {} of 10,000 records arrived", seen.len());
        // Take everything that comes without acknowledging: it must stop at 1,000.
        let batch = survivor.collect(usize::MAX, Duration::from_millis(200));
        assert!(batch.len() <= 1000, "{} records in flight at once", batch.len());
        seen.extend(batch.iter().map(|d| (d.partition, d.offset)));
        if !batch.is_empty() {
            assert_eq!(survivor.call(&ack_all("t", "g", &batch)), Response::Ok);
        }
    }
    let s = stats(&mut survivor);
    let g = s.groups.iter().find(|g| g.group == "g").unwrap();
    assert_eq!(g.partitions.iter().map(|p| p.lag).sum::<u64>(), 0, "all 10,000 acknowledged");
}

/// D7: members join, leave and crash while three producers publish; every acknowledged
/// record reaches the churning group and a stable group at least once.
#[test]
fn d7_membership_changes_mid_stream_strand_no_record() {
    let broker = start_broker(|c| c.core.ack_timeout = Duration::from_millis(400));
    let addr = broker.addr;
    Bin::connect(addr).call(&create("t", 8));
    let acked: Arc<Mutex<BTreeSet<(u32, u64)>>> = Arc::default();
    let seen: SeenByGroup = Arc::default();
    let done = Arc::new(AtomicBool::new(false));

    let seen_by_members = seen.clone();
    let member = move |group: &'static str, run_for: Duration, ack: bool| {
        let seen = seen_by_members.clone();
        move || {
            let mut c = Bin::connect(addr);
            c.call(&subscribe("t", group, 50));
            let end = Instant::now() + run_for;
            while Instant::now() < end {
                let Some(d) = c.deliver_within(Duration::from_millis(20)) else { continue };
                if ack {
                    seen.lock()
                        .unwrap()
                        .entry(group)
                        .or_default()
                        .extend(d.records.iter().map(|r| (r.partition, r.offset)));
                    c.send(&ack_all("t", group, &d.records));
                }
            }
            // Dropping the connection: a leave after acking, a crash with records unacked.
        }
    };
    let producers: Vec<_> = (0..3)
        .map(|p| {
            let acked = acked.clone();
            std::thread::spawn(move || {
                let mut c = Bin::connect(addr);
                for batch in 0..60 {
                    let reply = c.call(&publish("t", (0..10).map(|i| format!("p{p}-{batch}-{i}"))));
                    let Response::Published(placements) = reply else { panic!("{reply:?}") };
                    acked
                        .lock()
                        .unwrap()
                        .extend(placements.iter().map(|x| (x.partition, x.offset)));
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        })
        .collect();
    let stable = std::thread::spawn(member("stable", Duration::from_secs(30), true));
    let churn = {
        let done = done.clone();
        let member = member.clone();
        std::thread::spawn(move || {
            let mut round = 0u64;
            while !done.load(Ordering::SeqCst) {
                let a = std::thread::spawn(member("churn", Duration::from_millis(150), true));
                // A crashing member: takes records and never acknowledges them.
                let b = std::thread::spawn(member(
                    "churn",
                    Duration::from_millis(100),
                    round.is_multiple_of(2),
                ));
                a.join().unwrap();
                b.join().unwrap();
                round += 1;
            }
        })
    };
    for p in producers {
        p.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    churn.join().unwrap();
    // A last member drains the churning group.
    member("churn", Duration::from_secs(3), true)();
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), 1800);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = seen.lock().unwrap();
        let missing = |g: &str| acked.difference(&s.get(g).cloned().unwrap_or_default()).count();
        if missing("churn") == 0 && missing("stable") == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered: {} to churn, {} to stable",
            missing("churn"),
            missing("stable")
        );
        drop(s);
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(stable);
}

/// S1: `max_connections + 100` sockets: the excess get `TOO_MANY_CONNECTIONS` and are closed,
/// the admitted ones keep working, and the broker's descriptors return to baseline.
#[test]
fn s1_connections_past_the_limit_are_refused_and_descriptors_return_to_baseline() {
    let mqd = Mqd::spawn(&["--storage", "memory", "--max-connections", "20"]);
    let mut probe = Bin::connect(mqd.addr);
    assert_eq!(probe.call(&Request::Ping), Response::Pong);
    let fds_before = fd_count(mqd.child.id());
    let mut admitted: Vec<Bin> = (0..19).map(|_| Bin::connect(mqd.addr)).collect();
    for c in &mut admitted {
        assert_eq!(c.call(&Request::Ping), Response::Pong);
    }
    let mut excess: Vec<TcpStream> =
        (0..100).map(|_| TcpStream::connect(mqd.addr).unwrap()).collect();
    let mut refused = 0;
    for s in &mut excess {
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut line = String::new();
        let mut reader = std::io::BufReader::new(&*s);
        let _ = reader.read_line(&mut line);
        if line.starts_with("-ERR TOO_MANY_CONNECTIONS") {
            refused += 1;
            let mut rest = Vec::new();
            assert_eq!(reader.read_to_end(&mut rest).unwrap_or(0), 0, "closed after the error");
        }
    }
    assert_eq!(refused, 100, "every connection past the limit is refused");
    for c in &mut admitted {
        assert_eq!(c.call(&Request::Ping), Response::Pong, "admitted connections keep working");
    }
    drop(excess);
    drop(admitted);
    wait_connections(&mut probe, 1);
    let deadline = Instant::now() + WAIT;
    while fd_count(mqd.child.id()) > fds_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(fd_count(mqd.child.id()), fds_before, "file descriptors back to baseline");
    assert!(stats(&mut probe).connections_rejected >= 100);
}

/// S2: listening beyond loopback without `--auth-token` starts with a loud WARN; the default
/// listen address is loopback.
#[test]
fn s2_a_non_loopback_listen_without_a_token_warns_and_the_default_is_loopback() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mqd"))
        .args(["--listen", "0.0.0.0:0", "--storage", "memory"])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
        let listening = line.contains("listening on");
        lines.push(line);
        if listening {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = lines.join("\n");
    assert!(
        text.contains("WARN") && text.contains("without --auth-token"),
        "no warning for an exposed broker:\n{text}"
    );
    let config = mq_broker::config::Args::default().load().unwrap();
    assert!(config.listen.ip().is_loopback(), "default listen {}", config.listen);
}

/// S4: with `--max-topics 50` and `--max-groups 10`, the 51st topic (by PUBLISH, SUBSCRIBE or
/// CREATE_TOPIC) and the 11th group get their named error, and nothing more is created.
#[test]
fn s4_topics_and_groups_beyond_their_caps_get_named_errors() {
    let mqd = Mqd::spawn(&["--storage", "memory", "--max-topics", "50", "--max-groups", "10"]);
    let mut c = Bin::connect(mqd.addr);
    for i in 0..50 {
        let reply = c.call(&publish(&format!("topic-{i}"), ["x".to_string()]));
        assert!(matches!(reply, Response::Published(_)), "{i}: {reply:?}");
    }
    for request in [
        publish("topic-50", ["x".to_string()]),
        subscribe("topic-51", "g", 1),
        create("topic-52", 1),
    ] {
        let reply = c.call(&request);
        let Response::Error { code, message } = reply else { panic!("{reply:?}") };
        assert_eq!(code, ErrorCode::TOO_MANY_TOPICS, "{request:?}");
        assert!(message.contains("50"), "the limit is named: {message}");
    }
    assert_eq!(topics(&mut c).topics.len(), 50);
    let mut members = Vec::new();
    for g in 0..10 {
        let mut m = Bin::connect(mqd.addr);
        let reply = m.call(&subscribe("topic-0", &format!("g{g}"), 1));
        assert!(matches!(reply, Response::Subscribed { .. }), "{g}: {reply:?}");
        members.push(m);
    }
    let reply = c.call(&subscribe("topic-0", "g10", 1));
    assert!(matches!(reply, Response::Error { code: ErrorCode::TOO_MANY_GROUPS, .. }), "{reply:?}");
    assert_eq!(c.call(&Request::Ping), Response::Pong);
}

/// P1: with the default durability of disk storage (`--fsync always`), a record whose
/// `PUBLISHED` arrived is there after a SIGKILL sent right after the reply.
#[test]
fn p1_a_record_acknowledged_just_before_a_kill_is_there_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let args = ["--storage", "disk", "--data-dir", data, "--partitions", "1"];
    for round in 0..5u64 {
        let mut mqd = Mqd::spawn(&args);
        let mut c = Bin::connect(mqd.addr);
        let reply = c.call(&publish("t", [format!("r{round}")]));
        mqd.child.kill().unwrap();
        let Response::Published(placements) = reply else { panic!("{reply:?}") };
        assert_eq!(placements[0].offset, round, "offsets are never reused");
        mqd.child.wait().unwrap();
    }
    let mqd = Mqd::spawn(&args);
    let mut c = Bin::connect(mqd.addr);
    assert_eq!(records_of(&mut c, "t"), Some(5));
    c.call(&subscribe("t", "g", 10));
    let got = c.collect(5, WAIT);
    let values: Vec<_> = got.iter().map(|d| (d.offset, d.value.clone())).collect();
    let expected: Vec<_> = (0..5u64).map(|i| (i, Bytes::from(format!("r{i}")))).collect();
    assert_eq!(values, expected);
}

fn wait_exit(mqd: &mut Mqd) -> i32 {
    mqd.wait_within(Duration::from_secs(10)).expect("mqd exits within 10 s").code().unwrap()
}

/// P7: a whole segment deleted from the middle of a partition: mqd starts, reports the
/// missing offsets, and serves the records around the hole at their own offsets.
#[test]
fn p7_a_segment_deleted_in_the_middle_is_reported_and_later_offsets_keep_their_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let args = [
        "--storage",
        "disk",
        "--data-dir",
        data,
        "--partitions",
        "1",
        "--max-frame-bytes",
        "4096",
        "--segment-bytes",
        "8192",
    ];
    let mut mqd = Mqd::spawn(&args);
    let mut c = Bin::connect(mqd.addr);
    for i in 0..200u64 {
        let reply = c.call(&publish("t", [format!("record {i:04} {}", "x".repeat(100))]));
        assert!(matches!(reply, Response::Published(_)), "{reply:?}");
    }
    mqd.signal("TERM");
    assert_eq!(wait_exit(&mut mqd), 0);
    drop(mqd);

    let part = dir.path().join("topics/t/0");
    let mut segments: Vec<String> = std::fs::read_dir(&part)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".log"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 4, "{segments:?}");
    let victim = &segments[1];
    let first_missing: u64 = victim.trim_end_matches(".log").parse().unwrap();
    let next_base: u64 = segments[2].trim_end_matches(".log").parse().unwrap();
    std::fs::remove_file(part.join(victim)).unwrap();
    let _ = std::fs::remove_file(part.join(victim.replace(".log", ".index")));

    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mqd"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let stderr = child.stderr.take().unwrap();
        let log = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap().to_string());
                }
                log.lock().unwrap().push(line);
            }
        });
    }
    let addr: std::net::SocketAddr =
        rx.recv_timeout(Duration::from_secs(10)).unwrap().parse().unwrap();
    let mqd = Mqd { child, addr };
    let warning = format!("offsets {first_missing} to {} are missing", next_base - 1);
    assert!(
        log.lock().unwrap().iter().any(|l| l.contains("WARN") && l.contains(&warning)),
        "no `{warning}` in the log: {:?}",
        log.lock().unwrap()
    );
    let mut c = Bin::connect(mqd.addr);
    c.call(&subscribe("t", "g", 1000));
    let got = c.collect(200, Duration::from_secs(3));
    let offsets: BTreeSet<u64> = got.iter().map(|d| d.offset).collect();
    let expected: BTreeSet<u64> =
        (0..200).filter(|o| !(first_missing..next_base).contains(o)).collect();
    assert_eq!(offsets, expected, "every record outside the hole, none renumbered");
    for d in &got {
        assert!(
            d.value.starts_with(format!("record {:04} ", d.offset).as_bytes()),
            "offset {} holds {:?}",
            d.offset,
            String::from_utf8_lossy(&d.value[..12])
        );
    }
    let reply = c.call(&publish("t", ["after".to_string()]));
    let Response::Published(p) = reply else { panic!("{reply:?}") };
    assert_eq!(p[0].offset, 200, "new records continue after the last one");
}

/// P11: SIGTERM while two publishers hammer a disk broker: exit 0 within 10 s, the
/// clean-shutdown marker is written, the next start skips recovery, and every acknowledged
/// record is there.
#[test]
fn p11_sigterm_under_load_exits_cleanly_and_keeps_every_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let args = ["--storage", "disk", "--data-dir", &data, "--partitions", "4"];
    let mut mqd = Mqd::spawn(&args);
    let acked = Arc::new(AtomicU64::new(0));
    let publishers: Vec<_> = (0..2)
        .map(|p| {
            let (addr, acked) = (mqd.addr, acked.clone());
            std::thread::spawn(move || {
                let mut c = Bin::connect(addr);
                for batch in 0.. {
                    let id = c.send(&publish("t", (0..50).map(|i| format!("p{p}-{batch}-{i}"))));
                    match c.recv_within(WAIT) {
                        Some((rid, Response::Published(placements))) if rid == id => {
                            acked.fetch_add(placements.len() as u64, Ordering::SeqCst);
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    while acked.load(Ordering::SeqCst) < 5000 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let start = Instant::now();
    mqd.signal("TERM");
    assert_eq!(wait_exit(&mut mqd), 0);
    assert!(start.elapsed() < Duration::from_secs(10));
    for p in publishers {
        p.join().unwrap();
    }
    assert!(dir.path().join("clean_shutdown").exists(), "the clean-shutdown marker");
    drop(mqd);

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mqd"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut startup = Vec::new();
    let mut reader = std::io::BufReader::new(stderr);
    let mut addr = None;
    while addr.is_none() {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "mqd ended: {startup:?}");
        if let Some(rest) = line.split("listening on ").nth(1) {
            addr = Some(rest.split_whitespace().next().unwrap().parse().unwrap());
        }
        startup.push(line);
    }
    std::thread::spawn(move || for _ in reader.lines() {});
    let mqd = Mqd { child, addr: addr.unwrap() };
    assert!(
        !startup.iter().any(|l| l.contains("recovering by scanning")),
        "a clean stop needs no recovery scan: {startup:?}"
    );
    let mut c = Bin::connect(mqd.addr);
    let stored = records_of(&mut c, "t").unwrap();
    assert!(
        stored >= acked.load(Ordering::SeqCst),
        "{stored} stored, {} acknowledged",
        acked.load(Ordering::SeqCst)
    );
}

/// D5, half-open: a member that stays connected but sends and reads nothing (a stopped
/// process, a peer whose host died) is closed with `IDLE_TIMEOUT` once one of its records
/// times out, and its partitions and records go to the member that is alive; nothing is
/// dead-lettered.
#[test]
fn d5_a_silent_member_loses_its_partitions_and_records_to_the_live_one() {
    let broker = start_broker(|c| {
        c.core.ack_timeout = Duration::from_millis(300);
        c.core.max_deliveries = 2;
    });
    let mut live = Bin::connect(broker.addr);
    let mut silent = Bin::connect(broker.addr);
    live.call(&create("t", 2));
    assert!(matches!(live.call(&subscribe("t", "g", 100)), Response::Subscribed { .. }));
    assert!(matches!(silent.call(&subscribe("t", "g", 100)), Response::Subscribed { .. }));
    let mut publisher = Bin::connect(broker.addr);
    let reply = publisher.call(&publish("t", (0..20).map(|i| format!("r{i}"))));
    assert!(matches!(reply, Response::Published(ref p) if p.len() == 20), "{reply:?}");
    // The live member acks what it gets; the silent one never reads nor sends again.
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 20 && Instant::now() < deadline {
        if let Some(d) = live.deliver_within(Duration::from_millis(100)) {
            got.extend(d.records.iter().map(|r| r.value.clone()));
            live.send(&ack_all("t", "g", &d.records));
        }
    }
    assert_eq!(got.len(), 20, "every record reached the live member");
    // The silent member was closed with IDLE_TIMEOUT (after the replies it had).
    let mut closed = false;
    while let Some((_, response)) = silent.recv_within(Duration::from_secs(2)) {
        if let Response::Error { code, .. } = response {
            assert_eq!(code, ErrorCode::IDLE_TIMEOUT);
            closed = true;
        }
    }
    assert!(closed, "the silent member got IDLE_TIMEOUT");
    let mut admin = Bin::connect(broker.addr);
    let Response::Stats(json) = admin.call(&Request::Stats) else { panic!("no stats") };
    let stats: StatsReply = serde_json::from_slice(&json).unwrap();
    let g = stats.groups.iter().find(|g| g.group == "g").unwrap();
    assert_eq!(g.dead_lettered, 0, "nothing was dead-lettered");
    assert_eq!(g.members.len(), 1, "only the live member is left");
}
