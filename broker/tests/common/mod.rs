//! Shared helpers of the broker's integration tests: start a broker on `127.0.0.1:0`, and
//! talk to it in raw binary frames or raw text lines over real sockets.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mq_broker::config::Config;
use mq_broker::event_loop::Running;
use mq_protocol::text::{self, TextReply};
use mq_protocol::{Deliver, Limits, OffsetRange, Record, Request, Response, StartPosition};

/// How long a test waits for any one reply before failing.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A broker in a background thread with in-memory storage and the given tweaks.
pub fn start_broker(tweak: impl FnOnce(&mut Config)) -> Running {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut config = Config::memory("127.0.0.1:0".parse().unwrap());
    tweak(&mut config);
    Running::start(config).expect("broker starts")
}

/// A raw binary-dialect connection.
pub struct Bin {
    pub stream: TcpStream,
    buf: BytesMut,
    next_id: u32,
    pushes: VecDeque<Deliver>,
}

impl Bin {
    pub fn connect(addr: SocketAddr) -> Bin {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        stream.set_nodelay(true).unwrap();
        Bin { stream, buf: BytesMut::new(), next_id: 1, pushes: VecDeque::new() }
    }

    pub fn send(&mut self, request: &Request) -> u32 {
        self.try_send(request).expect("write")
    }

    /// As [`Bin::send`], but a broker that went away (killed mid-write: the write gets a
    /// reset) is an error to handle, not a panic.
    pub fn try_send(&mut self, request: &Request) -> std::io::Result<u32> {
        let id = self.next_id;
        self.next_id += 1;
        let mut out = BytesMut::new();
        request.encode(id, u32::MAX, &mut out).unwrap();
        self.stream.write_all(&out)?;
        Ok(id)
    }

    /// The next frame, or `None` after `timeout` or when the broker closed the connection.
    pub fn recv_within(&mut self, timeout: Duration) -> Option<(u32, Response)> {
        let deadline = Instant::now() + timeout;
        let limits = Limits { frame_body_bytes_max: u32::MAX, ..Limits::default() };
        loop {
            if let Some(d) = mq_protocol::decode_response(&mut self.buf, &limits)
                .expect("broker sent a bad frame")
            {
                return Some((d.request_id, d.result.expect("broker sent a bad body")));
            }
            if Instant::now() >= deadline {
                return None;
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) => {}
                Err(_) => return None,
            }
        }
    }

    /// Sends `request` and returns its reply, keeping pushes that arrive meanwhile.
    #[track_caller]
    pub fn call(&mut self, request: &Request) -> Response {
        let id = self.send(request);
        loop {
            match self.recv_within(REPLY_TIMEOUT) {
                Some((0, Response::Deliver(d))) => self.pushes.push_back(d),
                Some((rid, response)) if rid == id => return response,
                Some((0, response @ Response::Error { .. })) => return response,
                Some(other) => panic!("unexpected frame {other:?}"),
                None => panic!("no reply to {request:?}"),
            }
        }
    }

    /// The next DELIVER push within `timeout`.
    pub fn deliver_within(&mut self, timeout: Duration) -> Option<Deliver> {
        if let Some(d) = self.pushes.pop_front() {
            return Some(d);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.recv_within(deadline.saturating_duration_since(Instant::now()))? {
                (0, Response::Deliver(d)) => return Some(d),
                // The reply to a request sent without waiting (`send`), such as an ACK or a
                // PING sent as a sign of life.
                (_, Response::Ok | Response::Pong) => {}
                other => panic!("unexpected frame while waiting for DELIVER: {other:?}"),
            }
        }
    }

    /// Collects delivered records until `n` arrived or `timeout` passed.
    pub fn collect(&mut self, n: usize, timeout: Duration) -> Vec<mq_protocol::Delivery> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.deliver_within(left) {
                Some(d) => got.extend(d.records),
                None => break,
            }
        }
        got
    }

    /// Whether the broker has closed this connection (reads EOF within `timeout`).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 65536];
        while Instant::now() < deadline {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) => {}
                Err(_) => return true,
            }
        }
        false
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

/// A raw text-dialect connection.
pub struct Text {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl Text {
    pub fn connect(addr: SocketAddr) -> Text {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        Text { stream, buf: BytesMut::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// The next reply line (with its payload for MSG).
    #[track_caller]
    pub fn reply(&mut self) -> TextReply {
        self.reply_within(REPLY_TIMEOUT).expect("no text reply")
    }

    pub fn reply_within(&mut self, timeout: Duration) -> Option<TextReply> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) =
                text::decode_reply(&mut self.buf, &Limits::default()).expect("bad reply line")
            {
                return Some(r);
            }
            if Instant::now() >= deadline {
                return None;
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) => {}
                Err(_) => return None,
            }
        }
    }
}

pub fn publish(topic: &str, values: impl IntoIterator<Item = String>) -> Request {
    Request::Publish {
        topic: topic.into(),
        records: values.into_iter().map(|v| Record { key: None, value: Bytes::from(v) }).collect(),
    }
}

pub fn subscribe(topic: &str, group: &str, credit: u32) -> Request {
    Request::Subscribe {
        topic: topic.into(),
        group: group.into(),
        start: StartPosition::Earliest,
        credit,
        kind: mq_protocol::GroupKind::Durable,
    }
}

pub fn ack_all(topic: &str, group: &str, records: &[mq_protocol::Delivery]) -> Request {
    Request::Ack {
        topic: topic.into(),
        group: group.into(),
        ranges: records
            .iter()
            .map(|d| OffsetRange { partition: d.partition, first: d.offset, last: d.offset })
            .collect(),
    }
}

pub fn create(topic: &str, partitions: u32) -> Request {
    Request::CreateTopic(mq_protocol::CreateTopic {
        topic: topic.into(),
        partitions,
        retention_bytes: 0,
        retention_ms: 0,
    })
}

/// Resident memory of this process, in KiB, from /proc.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A real `mqd` child process.
pub struct Mqd {
    pub child: std::process::Child,
    pub addr: SocketAddr,
}

impl Mqd {
    /// Starts the `mqd` binary on 127.0.0.1:0 with `args` and waits until it listens.
    pub fn spawn(args: &[&str]) -> Mqd {
        Mqd::try_spawn_at("127.0.0.1:0", args).expect("mqd starts and listens")
    }

    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_within(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }
}

impl Drop for Mqd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Mqd {
    /// Starts the `mqd` binary listening on `listen` (such as the address of a broker that
    /// was just killed) with `args`, and waits until it listens. Returns the tail of its
    /// output if it exits first (the port not free yet, say) or stays silent for 30 s.
    pub fn try_spawn_at(listen: &str, args: &[&str]) -> Result<Mqd, String> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mqd"))
            .args(["--listen", listen])
            .args(args)
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("mqd starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let mut early = Vec::new();
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[mqd] {line}");
                if let Some(rest) = line.split("listening on ").nth(1) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Ok(rest.split_whitespace().next().unwrap().to_string()));
                    }
                } else if tx.is_some() {
                    early.push(line);
                }
            }
            if let Some(tx) = tx.take() {
                let _ = tx.send(Err(early.join("\n")));
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(addr)) => Ok(Mqd { child, addr: addr.parse().unwrap() }),
            Ok(Err(output)) => {
                let _ = child.wait();
                Err(format!("mqd exited before listening: {output}"))
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err("mqd did not say it listens within 30 s".into())
            }
        }
    }
}
