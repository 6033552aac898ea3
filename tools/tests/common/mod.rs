//! Shared helpers of the tools' tests: an in-process broker on `127.0.0.1:0` and a way to
//! run a tool binary with arguments and stdin, capturing what it prints.
#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use mq_broker::config::Config;
use mq_broker::event_loop::Running;

/// A broker in a background thread with memory storage.
pub fn start_broker() -> Running {
    Running::start(Config::memory("127.0.0.1:0".parse().unwrap())).expect("broker starts")
}

/// What a tool run printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `exe` with `args` against `addr` (`--addr` first), feeding it `stdin`.
pub fn run(exe: &str, addr: Option<SocketAddr>, args: &[&str], stdin: &str) -> Run {
    let mut command = Command::new(exe);
    if let Some(addr) = addr {
        command.arg("--addr").arg(addr.to_string());
    }
    let mut child = command
        .args(args)
        .env_remove("MQ_ADDR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tool starts");
    // A tool may exit before reading its input (an unreachable broker): a broken pipe then
    // is no failure of the test.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "writing the tool's stdin: {e}");
    }
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// An address nothing listens on.
pub fn dead_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}
